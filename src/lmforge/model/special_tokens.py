"""Control-token spellings of the built-in chat formats: plain data, importable without tokenizers or torch."""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
"""Document separator; always in the vocabulary, and the eos and pad token unless told otherwise."""

CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA2_TOKENS = ["<s>", "</s>", "[INST]", "[/INST]"]  # also Mistral's
GEMMA_TOKENS = ["<bos>", "<start_of_turn>", "<end_of_turn>"]
PHI_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
THINK_TOKENS = ["<think>", "</think>"]
LLAMA4_TOKENS = ["<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>"]
PHI4_TOKENS = ["<|im_sep|>"]  # with the ChatML ones
DEEPSEEK_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]
GLM4_TOKENS = ["[gMASK]", "<sop>", "<|observation|>"]  # with Phi's <|system|>, <|user|>, <|assistant|>
GRANITE_TOKENS = ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"]
COHERE_TOKENS = [
    "<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
    "<|SYSTEM_TOKEN|>",
]
MISTRAL_V7_TOKENS = ["[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
ALL_CHAT_TOKENS = [
    *CHATML_TOKENS,
    *LLAMA3_TOKENS,
    *LLAMA2_TOKENS,
    *GEMMA_TOKENS,
    *PHI_TOKENS,
    *THINK_TOKENS,
]
"""The control tokens of the first built-in chat templates. Kept as it is, because tests pin the layout of the
tokenizers built with it; `TEMPLATE_TOKENS` holds every template's."""
TEMPLATE_TOKENS = [
    *ALL_CHAT_TOKENS,
    *LLAMA4_TOKENS,
    *PHI4_TOKENS,
    *DEEPSEEK_TOKENS,
    *GLM4_TOKENS,
    *GRANITE_TOKENS,
    *COHERE_TOKENS,
    *MISTRAL_V7_TOKENS,
]
"""Every control token of the built-in chat templates, so one tokenizer can render any of them."""
