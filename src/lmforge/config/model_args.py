"""Which model and tokenizer to load, and how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TorchDtype = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]
FlashAttn = Literal["auto", "sdpa", "fa2", "disabled"]
ATTN_FROM_FLASH_ATTN = {"auto": "sdpa_varlen", "sdpa": "sdpa_varlen", "fa2": "flash_attention_2", "disabled": "eager"}
"""LLaMA-Factory's `flash_attn` values mapped to `attn_implementation`. `sdpa_varlen` (lmforge.model.attention)
is transformers' sdpa with packed samples attended one by one instead of through a block mask."""


@dataclass(frozen=True)
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local directory of a Hugging Face causal LM (config, tokenizer, weights), or a hub "
                  "id (org/name) already in the local Hugging Face cache."}
    )
    model_revision: str = field(
        default="main",
        metadata={"help": "Revision (branch, tag or commit) of a hub id model_name_or_path, read from the local "
                  "Hugging Face cache (HF_HUB_CACHE / HF_HOME); lmforge does not download."},
    )
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local directory (or comma-separated list) of LoRA adapters to load; the last keeps training."},
    )
    torch_dtype: TorchDtype = field(
        default="auto",
        metadata={"help": "Weight dtype: auto (bf16 where supported, else fp32), bf16, fp16 or fp32."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention backend: sdpa_varlen (default: sdpa, packed samples attended one by one), sdpa "
            "(transformers' own, block mask for packed rows), varlen_attn (GPU: PyTorch's FlashAttention-2 varlen kernel, one "
            "call for all packed samples; elsewhere as sdpa_varlen), eager, flash_attention_2, flex_attention."
        },
    )
    flash_attn: FlashAttn = field(
        default="auto",
        metadata={"help": "LLaMA-Factory spelling of the attention backend: auto, sdpa, fa2, disabled."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run Python code shipped with the model directory. Off unless you trust it."}
    )
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use the tokenizers-backed (fast) tokenizer."})
    low_cpu_mem_usage: bool = field(default=True, metadata={"help": "Load weights without a second full copy in RAM."})
    disable_gradient_checkpointing: bool = field(
        default=False, metadata={"help": "LLaMA-Factory key; lmforge enables checkpointing only with gradient_checkpointing."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Accepted for compatibility; lmforge loads local files only."})

    @property
    def attention(self) -> str:
        """The attn_implementation to pass to transformers."""
        return self.attn_implementation or ATTN_FROM_FLASH_ATTN.get(self.flash_attn, "sdpa_varlen")
