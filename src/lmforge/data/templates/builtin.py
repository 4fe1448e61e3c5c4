"""The named chat templates: one declarative row each, registered under the name users write in `template:`.

Rows follow LLaMA-Factory 0.9.5's templates of the same name (slots, default system, stop words) so a YAML
written for it renders the same text here. Where we differ, the row says why. Slot markers: `{{content}}`
is the message, `{{bos}}` / `{{eos}}` the tokenizer's bos / eos token (see template.py).

Each row whose model publishes a chat template is tested against a hand-written copy of it
(tests/assets/chat_templates/<name>.jinja) through `apply_chat_template`.
"""

from __future__ import annotations

from lmforge.data.templates.template import Template
from lmforge.registry import Registry

TEMPLATES: Registry[Template] = Registry("template")

_CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>")
_CHATML = {
    "user": "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
    "assistant": "{{content}}<|im_end|>\n",
    "system": "<|im_start|>system\n{{content}}<|im_end|>\n",
    "special_tokens": _CHATML_SPECIALS,
}
# Qwen2.5 / Qwen3 put tool results in a user turn wrapped in <tool_response>, and describe tools in the system
# prompt as JSON inside <tools>; their stop word is <|im_end|> alone.
_QWEN = {
    **_CHATML,
    "observation": "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    "stop_words": ("<|im_end|>",),
    "tool_format": "qwen",
}

_ROWS = (
    # Plain-text format for models without a chat format of their own.
    Template(
        name="default",
        user="Human: {{content}}{{eos}}\nAssistant:",
        assistant="{{content}}{{eos}}\n",
        system="System: {{content}}{{eos}}\n",
    ),
    # No markup at all: the texts are concatenated (continued pretraining on dialogues, base models).
    Template(name="empty", user="{{content}}", assistant="{{content}}"),
    Template(
        name="chatml",
        **_CHATML,
        observation="<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
        stop_words=("<|im_end|>", "<|im_start|>"),
    ),
    # Qwen2 / Qwen2.5 (-Instruct): ChatML whose own chat template fills in this system prompt when none is given.
    Template(
        name="qwen", **_QWEN, default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    ),
    # Qwen3 -Instruct-2507 and Qwen3-Next -Instruct (non-thinking models): LLaMA-Factory's qwen3_nothink is plain
    # Qwen ChatML without a default system and without <think> blocks, which is exactly what those models'
    # chat template renders (they never emit thinking tags).
    Template(name="qwen3_nothink", **_QWEN),
    Template(
        name="llama3",
        prefix="{{bos}}",
        user=(
            "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        assistant="{{content}}<|eot_id|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",
        # Llama 3.1+ answers tool results from the `ipython` role.
        observation=(
            "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        stop_words=("<|eot_id|>", "<|eom_id|>"),
        special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    # Llama 2 chat, as Meta's reference code and the model's chat template write it: bos before every [INST],
    # a space around each answer and before eos. LLaMA-Factory's row omits those spaces; with the sentencepiece
    # Llama 2 tokenizer the only resulting difference is the '▁' token before </s>, which Meta's format has.
    Template(
        name="llama2",
        user="{{bos}}[INST] {{content}} [/INST]",
        assistant=" {{content}} {{eos}}",
        system="<<SYS>>\n{{content}}\n<</SYS>>\n\n",
        system_in_user=True,
    ),
    # Mistral instruct (v3 tokenizer spacing). The system prompt opens the first user turn, as LLaMA-Factory does
    # (Mistral's own v0.3 template moves it to the last user turn, which no multi-turn split can reproduce).
    # [INST] is a control token in v3 tokenizers and plain text in v1/v2 ones, so it is not required whole.
    Template(
        name="mistral",
        prefix="{{bos}}",
        user="[INST] {{content}}[/INST]",
        assistant=" {{content}}{{eos}}",
        system="{{content}}\n\n",
        system_in_user=True,
    ),
    # Gemma (1, 2, 3): no system role; the system text opens the first user turn, as Gemma 3's template does.
    Template(
        name="gemma",
        prefix="{{bos}}",
        user="<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
        assistant="{{content}}<end_of_turn>\n",
        system="{{content}}\n\n",
        observation="<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
        system_in_user=True,
        stop_words=("<end_of_turn>",),
        special_tokens=("<start_of_turn>", "<end_of_turn>"),
    ),
    # Phi-3 / Phi-3.5.
    Template(
        name="phi",
        user="<|user|>\n{{content}}<|end|>\n<|assistant|>\n",
        assistant="{{content}}<|end|>\n",
        system="<|system|>\n{{content}}<|end|>\n",
        stop_words=("<|end|>",),
        special_tokens=("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
    ),
)

for _row in _ROWS:
    TEMPLATES.add(_row.name, _row)
