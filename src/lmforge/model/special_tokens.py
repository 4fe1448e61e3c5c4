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
ALL_CHAT_TOKENS = [
    *CHATML_TOKENS,
    *LLAMA3_TOKENS,
    *LLAMA2_TOKENS,
    *GEMMA_TOKENS,
    *PHI_TOKENS,
    *THINK_TOKENS,
]
"""Every control token of the built-in chat templates, so one tokenizer can render any of them."""
