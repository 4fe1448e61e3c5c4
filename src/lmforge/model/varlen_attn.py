"""`varlen_attn`: packed samples attended by PyTorch's own FlashAttention-2 varlen kernel, one call per layer.

`sdpa_varlen` runs one SDPA call per packed sample. On a CPU that costs nothing extra, but on a GPU each call is
a kernel launch per sample per layer (and again in the backward), which made packed training slower than padded
on an H200 (benchmarks/RESULTS.md). `torch.nn.attention.varlen.varlen_attn` (PyTorch >= 2.10, CUDA, fp16/bf16)
takes the whole packed batch with the samples' cumulative offsets and runs one kernel, without the flash-attn
package. Same spans, same result as `sdpa_varlen` up to kernel rounding.

Where the kernel does not apply (CPU tensors, fp32 without autocast, a cache or padding mask, sliding windows) the
forward goes to `sdpa_varlen`, which handles all of those exactly; on CPU, or on CUDA with a torch that lacks the
kernel, that is said once in the log. Under autocast (fp32 weights, `bf16: true`) queries and keys reach attention
in fp32 (RoPE's fp32 tables promote them); the kernel then runs in autocast's dtype, as SDPA would.
"""

from __future__ import annotations

import inspect

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from lmforge.logging import get_logger
from lmforge.model.attention import sample_spans, sdpa_varlen_attention_forward, sdpa_varlen_mask

logger = get_logger(__name__)

NAME = "varlen_attn"
_said_fallback = False


def varlen_kernel():
    """torch's varlen_attn, or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _causal_kwargs(kernel) -> dict:
    # torch 2.10-2.11 take is_causal; later releases express causality as window_size=(-1, 0)
    params = inspect.signature(kernel).parameters
    return {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}


def half_dtype(query: torch.Tensor) -> torch.dtype | None:
    """The fp16/bf16 dtype the kernel would run in: the tensors' own, or autocast's (with fp32 weights under
    autocast, RoPE's fp32 cos/sin promote queries and keys to fp32; SDPA would cast them back, so does this)."""
    if query.dtype in (torch.float16, torch.bfloat16):
        return query.dtype
    if query.is_cuda and torch.is_autocast_enabled("cuda"):
        dtype = torch.get_autocast_dtype("cuda")
        return dtype if dtype in (torch.float16, torch.bfloat16) else None
    return None


def _kernel_applies(query: torch.Tensor, kv_length: int, attention_mask, position_ids, module, dropout: float,
                    kwargs) -> bool:
    return (
        query.is_cuda
        and not (dropout and module.training)
        and half_dtype(query) is not None
        and attention_mask is None
        and position_ids is not None
        and query.shape[2] == kv_length
        and query.shape[2] > 1
        and getattr(module, "is_causal", True)
        and not (kwargs.get("sliding_window") or getattr(module, "sliding_window", None))
        and kwargs.get("softcap") is None
        and varlen_kernel() is not None
    )


def cumulative_offsets(spans: list[list[tuple[int, int]]], length: int, device) -> tuple[torch.Tensor, int]:
    """(cu_seqlens over the flattened batch, int32, and the longest span) for the spans of each row."""
    offsets, longest = [0], 0
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            offsets.append(row * length + end)
            longest = max(longest, end - start)
    return torch.tensor(offsets, dtype=torch.int32, device=device), longest


def varlen_attn_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: float | None = None, **kwargs):
    global _said_fallback
    position_ids = kwargs.get("position_ids")
    if query.is_cuda and varlen_kernel() is None and not _said_fallback:
        logger.warning("varlen_attn: this torch (%s) has no torch.nn.attention.varlen (PyTorch >= 2.10); attention "
                       "runs as sdpa_varlen", torch.__version__)
        _said_fallback = True
    if not _kernel_applies(query, key.shape[2], attention_mask, position_ids, module, dropout, kwargs):
        if not query.is_cuda and not _said_fallback:
            logger.info("varlen_attn: no CUDA tensors here; attention runs as sdpa_varlen")
            _said_fallback = True
        return sdpa_varlen_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if position_ids.shape[0] != query.shape[0]:
        position_ids = position_ids.expand(query.shape[0], -1)
    return kernel_attention(query, key, value, position_ids, scaling), None


@torch.compiler.disable
def kernel_attention(query, key, value, position_ids, scaling):
    """The varlen kernel over the flattened batch, (B, T, H, D) out; outside a compiled graph, as sdpa_varlen's
    packed path is (spans are Python data: a graph would recompile for every packing)."""
    batch, heads, length, dim = query.shape
    offsets, longest = cumulative_offsets(sample_spans(position_ids), length, query.device)
    kernel = varlen_kernel()
    dtype = half_dtype(query)
    q = query.transpose(1, 2).reshape(batch * length, heads, dim).to(dtype)
    k = key.transpose(1, 2).reshape(batch * length, key.shape[1], dim).to(dtype)
    v = value.transpose(1, 2).reshape(batch * length, value.shape[1], dim).to(dtype)
    extra = _causal_kwargs(kernel)
    if k.shape[1] != heads:
        if "enable_gqa" in inspect.signature(kernel).parameters:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(heads // k.shape[1], dim=1)
            v = v.repeat_interleave(heads // v.shape[1], dim=1)
    out = kernel(q, k, v, offsets, offsets, longest, longest, scale=scaling, **extra)
    return out.reshape(batch, length, heads, dim)


AttentionInterface.register(NAME, varlen_attn_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_varlen_mask)
