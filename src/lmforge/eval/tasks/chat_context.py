"""Prompts as chat turns, lm-evaluation-harness's `apply_chat_template` / `fewshot_as_multiturn` /
`system_instruction`, rendered with an lmforge chat template: `PromptRenderer`.

    renderer = PromptRenderer(get_template("chatml", tokenizer), tokenizer, fewshot_as_multiturn=True)
    items = build_items(spec, num_fewshot=2, renderer=renderer)
    items[0].context    # '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n...<|im_start|>assistant\\n'

The turns are lm-eval 0.4.13's (`ConfigurableTask.fewshot_context` / `build_qa_turn`):
  - system: `system_instruction` and the task's description, joined by the fewshot delimiter unless either side
    already has whitespace there; no system turn when both are empty (a template's default system then applies);
  - each shot: a user turn (its question) and an assistant turn (its answer); the final question: a user turn;
  - fewshot_as_multiturn: those turns as they are; otherwise everything after the system turn is collapsed into
    one user message, written as the plain prompt is (question, target delimiter, answer, fewshot delimiter...);
  - the message list is rendered with the generation prompt (the context ends with the assistant header), and
    multiple_choice continuations get no target delimiter (the answer starts the assistant's turn).
Without a chat template, a system_instruction is written in front of the plain prompt, as lm-eval writes it.

The rendered text holds the template's special tokens as text and is scored as is: `Scorer.encode` adds no
second BOS to a text that starts with one (lm-eval's `has_bos_prefix` rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import ConfigError
from lmforge.eval.tasks.prompts import DocFormatter, _question, answer_text
from lmforge.eval.tasks.spec import TaskSpec


@dataclass
class Turn:
    """lm-eval's `Message`: a role, its text and the delimiter written after it in the plain-text prompt."""

    role: str  # system | user | assistant
    content: str
    delimiter: str = ""


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """prefix + delimiter + suffix, without the delimiter when either side has whitespace at the join."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def context_turns(spec: TaskSpec, fmt: DocFormatter, doc: dict, index: int, shots: list[tuple[int, dict]],
                  system_instruction: str | None) -> list[Turn]:
    """The system turn (if any), each shot's user and assistant turns and the question's user turn."""
    turns = []
    system = maybe_delimit(system_instruction, fmt.description(doc, index), spec.fewshot_delimiter)
    if system:
        turns.append(Turn("system", system))
    for shot_index, shot in shots:
        answer = answer_text(fmt, shot, shot_index)
        turns.append(Turn("user", _question(fmt, shot, shot_index), "" if answer is None else spec.target_delimiter))
        if answer is not None:
            turns.append(Turn("assistant", answer, spec.fewshot_delimiter))
    turns.append(Turn("user", _question(fmt, doc, index)))
    return turns


def single_turn(turns: list[Turn]) -> list[Turn]:
    """lm-eval's multiturn_to_singleturn: the system turn kept, every other turn joined into one user message."""
    system, rest = (turns[:1], turns[1:]) if turns[0].role == "system" else ([], turns)
    text = "".join(t.content + t.delimiter for t in rest[:-1]) + rest[-1].content
    return [*system, Turn("user", text)]


class PromptRenderer:
    """How `build_items` writes a context when lm-eval's chat options are set; `template` None: plain text
    (only a system_instruction in front)."""

    def __init__(self, template=None, tokenizer=None, *, fewshot_as_multiturn: bool = False,
                 system_instruction: str | None = None, default_system: str | None = None):
        """`default_system`: the run's `default_system`, the system turn of a prompt that has none (what training
        gave every sample without one; lm-eval has no such setting)."""
        if fewshot_as_multiturn and template is None:
            raise ConfigError("fewshot_as_multiturn: needs apply_chat_template (lm-eval's rule)")
        self.template, self.tokenizer = template, tokenizer
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.system_instruction = system_instruction
        self.default_system = default_system

    def target_delimiter(self, spec: TaskSpec) -> str:
        """What goes between context and a multiple_choice continuation: nothing once the context ends with the
        assistant header (lm-eval's construct_requests under apply_chat_template, without gen_prefix)."""
        return spec.target_delimiter if self.template is None else ""

    def context(self, spec: TaskSpec, fmt: DocFormatter, doc: dict, index: int, shots: list[tuple[int, dict]]) -> str:
        turns = context_turns(spec, fmt, doc, index, shots, self.system_instruction)
        if self.template is None:
            return "".join(t.content + t.delimiter for t in turns)
        return self.render(turns if self.fewshot_as_multiturn else single_turn(turns))

    def render(self, turns: list[Turn]) -> str:
        """The template's text of the turns, ending with the assistant header (add_generation_prompt)."""
        from lmforge.types import Conversation, Message, Role

        system = turns[0].content if turns[0].role == "system" else (self.default_system or "")
        messages = [Message(Role(t.role), t.content) for t in turns if t.role != "system"]
        conv = Conversation(messages, system=system)
        # a named template's default_system fills in a missing system turn, as the model's own chat_template does
        return "".join(self.template.render_segments(self.tokenizer, conv))


def chat_template_for(choice: bool | str, adapter_name_or_path: str | None, model_name_or_path: str | None,
                      tokenizer, source: str):
    """The template `apply_chat_template` renders with: a named one (`apply_chat_template: chatml`), else the one
    the run was trained with (lmforge_run.json of the adapter, then the model), else the tokenizer's own
    chat_template; a ConfigError naming the key when there is none."""
    from lmforge.data.templates import AUTO, get_template
    from lmforge.run_info import trained_template

    name = choice if isinstance(choice, str) else trained_template(adapter_name_or_path, model_name_or_path)
    if name is None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"{source}: apply_chat_template: {model_name_or_path} has no lmforge_run.json naming a template and "
                "its tokenizer has no chat_template; set apply_chat_template to a template name instead of true "
                "(e.g. apply_chat_template=chatml, or qwen, llama3)")
        name = AUTO
    try:
        return get_template(name, tokenizer)
    except ConfigError as exc:
        raise ConfigError(f"{source}: apply_chat_template: {exc}") from None
