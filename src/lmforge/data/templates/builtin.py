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


# LLaMA-Factory's thought_words: the block Qwen3 and DeepSeek-R1 write around their reasoning.
_THINK = ("<think>\n", "\n</think>\n\n")
_GEMMA = dict(
    prefix="{{bos}}",
    user="<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    assistant="{{content}}<end_of_turn>\n",
    system="{{content}}\n\n",
    observation="<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
    system_in_user=True,
    special_tokens=("<start_of_turn>", "<end_of_turn>"),
)
# DeepSeek-V3 / R1: bos, the system text bare, then <｜User｜>...<｜Assistant｜> answer + eos (<｜end▁of▁sentence｜>).
_DEEPSEEK = dict(
    prefix="{{bos}}",
    user="<｜User｜>{{content}}<｜Assistant｜>",
    assistant="{{content}}{{eos}}",
    special_tokens=("<｜User｜>", "<｜Assistant｜>"),
)
# Tulu 3 / OLMo 2 instruct: <|role|>\n lines, answers closed by eos. The models' template writes no '\n' after the
# LAST answer's eos; a row has one assistant slot for every turn, so it always writes it (trained after eos,
# never generated: generation stops at eos). Prompts are the model's own text.
_TULU = dict(
    user="<|user|>\n{{content}}\n<|assistant|>\n",
    assistant="{{content}}{{eos}}\n",
    system="<|system|>\n{{content}}\n",
    special_tokens=("<|user|>", "<|assistant|>", "<|system|>"),
)

_ROWS += (
    # Qwen3 (hybrid thinking models, e.g. Qwen3-8B): Qwen ChatML without a default system prompt, a reasoning
    # template (see reasoning.py for enable_thinking and where training differs from Qwen3's own template).
    Template(name="qwen3", **_QWEN, thought_words=_THINK),
    Template(
        name="llama4",
        prefix="{{bos}}",
        user=(
            "<|header_start|>user<|header_end|>\n\n{{content}}<|eot|>"
            "<|header_start|>assistant<|header_end|>\n\n"
        ),
        assistant="{{content}}<|eot|>",
        system="<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>",
        observation=(
            "<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"
        ),
        stop_words=("<|eot|>", "<|eom|>"),
        special_tokens=("<|header_start|>", "<|header_end|>", "<|eot|>"),
    ),
    # Gemma 2: the gemma row as LLaMA-Factory re-registers it, with its efficient_eos (the eos after
    # <end_of_turn>\n is labelled at the next prompt's first token and appended to the sample) and <eos> as a
    # stop word. Gemma 2's own template has no system role (it raises); like Gemma 3's, the row puts the system
    # text at the top of the first user turn.
    Template(name="gemma2", **_GEMMA, stop_words=("<eos>", "<end_of_turn>"), efficient_eos=True),
    # Gemma 3 (text): the same rows as gemma; registered under the name LLaMA-Factory users write.
    Template(name="gemma3", **_GEMMA, stop_words=("<end_of_turn>",)),
    # Mistral Small 3 (24B-2501, v7 tekken tokenizer): [SYSTEM_PROMPT] block, no spaces inside [INST].
    # With no system prompt none is written, as the 2501 model's published template does (the dated default
    # system prompt belongs to Mistral Small 3.1's template, not this one), and as LLaMA-Factory's row does.
    Template(
        name="mistral_small",
        prefix="{{bos}}",
        user="[INST]{{content}}[/INST]",
        assistant="{{content}}{{eos}}",
        system="[SYSTEM_PROMPT]{{content}}[/SYSTEM_PROMPT]",
        special_tokens=("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"),
    ),
    # Phi-4 (14B): ChatML with <|im_sep|> after the role and no newlines between turns.
    Template(
        name="phi4",
        user="<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>",
        assistant="{{content}}<|im_end|>",
        system="<|im_start|>system<|im_sep|>{{content}}<|im_end|>",
        stop_words=("<|im_end|>",),
        special_tokens=("<|im_start|>", "<|im_end|>", "<|im_sep|>"),
    ),
    Template(name="deepseek3", **_DEEPSEEK),
    # DeepSeek-R1 (and its distills): deepseek3's rows as a reasoning template. R1's own template drops the
    # reasoning of every answer and ends its generation prompt with '<think>\n'; the row follows LLaMA-Factory
    # (see reasoning.py; the test asserts both differences).
    Template(name="deepseekr1", **_DEEPSEEK, thought_words=_THINK),
    # GLM-4 (9B chat, 0414): [gMASK]<sop> once, '<|assistant|>' then '\n' + answer; no end-of-turn token: the
    # next <|user|> ends an answer (stop words), and efficient_eos trains eos there, as LLaMA-Factory does.
    Template(
        name="glm4",
        prefix="[gMASK]<sop>",
        user="<|user|>\n{{content}}<|assistant|>",
        assistant="\n{{content}}",
        system="<|system|>\n{{content}}",
        observation="<|observation|>\n{{content}}<|assistant|>",
        stop_words=("<|user|>", "<|observation|>"),
        special_tokens=("[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|system|>"),
        efficient_eos=True,
    ),
    # IBM Granite 3.0: <|start_of_role|>role<|end_of_role|> ... <|end_of_text|>\n (its eos) per message.
    Template(
        name="granite3",
        user=(
            "<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n"
            "<|start_of_role|>assistant<|end_of_role|>"
        ),
        assistant="{{content}}<|end_of_text|>\n",
        system="<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n",
        special_tokens=("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"),
    ),
    # Cohere Command-R / Aya: bos, turn tokens; the answer ends with eos, which is <|END_OF_TURN_TOKEN|>.
    Template(
        name="cohere",
        prefix="{{bos}}",
        user=(
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        ),
        assistant="{{content}}{{eos}}",
        system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>",
        special_tokens=(
            "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"
        ),
    ),
    # Yi (-Chat, 1.5-Chat): ChatML. Yi's own template writes a system prompt bare, before the first
    # <|im_start|>; LLaMA-Factory's row wraps it in a ChatML system turn, and so does this one.
    Template(name="yi", **_CHATML, stop_words=("<|im_end|>",)),
    # OLMo 2 instruct: bos (= eos, <|endoftext|>) then Tulu's format. LLaMA-Factory's `olmo` row is OLMo 1's;
    # this one follows OLMo 2's own template.
    Template(name="olmo2", prefix="{{bos}}", **_TULU),
    # Tulu 3 (Llama-3.1-Tulu-3): the same format after the tokenizer's bos (LLaMA-Factory has no such row).
    Template(name="tulu", prefix="{{bos}}", **_TULU),
    # InternLM2 / 2.5 chat: ChatML after bos, with InternLM's own system prompt filled in when none is given
    # (LLaMA-Factory's default_system; the model's template has none, so it appears only through this row).
    Template(
        name="intern2",
        prefix="{{bos}}",
        **_CHATML,
        default_system=(
            "You are an AI assistant whose name is InternLM (书生·浦语).\n"
            "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
            "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
            "- InternLM (书生·浦语) can understand and communicate fluently in the language "
            "chosen by the user such as English and 中文."
        ),
        stop_words=("<|im_end|>",),
    ),
    # Alpaca and Vicuna have no model-published template; LLaMA-Factory writes its own rendering into the
    # tokenizer (replace_jinja_template), which these rows (and their tests' oracles) follow.
    Template(
        name="alpaca",
        user="### Instruction:\n{{content}}\n\n### Response:\n",
        assistant="{{content}}{{eos}}\n\n",
        default_system=(
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n"
        ),
    ),
    Template(
        name="vicuna",
        user="USER: {{content}} ASSISTANT:",
        assistant="{{content}}{{eos}}",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
    ),
)

for _row in _ROWS:
    TEMPLATES.add(_row.name, _row)
