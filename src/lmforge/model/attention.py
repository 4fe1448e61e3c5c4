"""`sdpa_varlen`: PyTorch SDPA that attends within each packed sample instead of through a block mask.

transformers' own `sdpa` path turns packed position_ids into a (B, 1, T, T) block-diagonal boolean mask.
SDPA cannot skip the masked blocks of such a mask, so a row of k samples costs a full T x T attention, twice
the causal triangle, plus the mask itself. `sdpa_varlen` instead finds each sample's span from the
position_ids (a sample starts wherever the position does not continue the previous one) and runs one causal
SDPA call per span: the cost is sum(len_i^2 / 2), and the fused kernels (flash on CPU and CUDA) keep only
the output and log-sum-exp for the backward pass. The result equals the masked computation (the exactness
test checks losses and gradients against unpacked padded batches).

Sliding-window layers (Mistral, Gemma 3's local layers) get their window as an explicit mask inside each
span. Attention logit softcapping (Gemma 2) is beyond SDPA: `choose_attention` loads such models with eager.

Everything that is not a packed or plain causal forward without a cache (padded batches with an attention
mask, generation with a KV cache) goes to transformers' `sdpa` unchanged. The name is registered with
transformers' attention and mask interfaces when this module is imported.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from lmforge.errors import ConfigError
from lmforge.logging import get_logger

logger = get_logger(__name__)

NAME = "sdpa_varlen"

# Every layer of one forward pass gets the same position_ids tensor: find its spans once.
_last_spans: tuple[weakref.ref, int, list[list[tuple[int, int]]]] | None = None


def sample_spans(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each run of consecutive positions, i.e. of each packed sample."""
    global _last_spans
    if _last_spans is not None and _last_spans[0]() is position_ids and _last_spans[1] == position_ids._version:
        return _last_spans[2]
    rows, length = position_ids.shape
    breaks = (position_ids[:, 1:] != position_ids[:, :-1] + 1).nonzero().tolist()
    starts: list[list[int]] = [[0] for _ in range(rows)]
    for row, col in breaks:
        starts[row].append(col + 1)
    spans = [list(zip(s, s[1:] + [length])) for s in starts]
    _last_spans = (weakref.ref(position_ids), position_ids._version, spans)
    return spans


def sdpa_varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    position_ids = kwargs.get("position_ids")
    q_length, kv_length = query.shape[2], key.shape[2]
    if (
        attention_mask is not None
        or position_ids is None
        or q_length != kv_length
        or q_length < 2
        or not getattr(module, "is_causal", True)
        or kwargs.get("softcap") is not None  # the loader picks eager for softcapping models (choose_attention)
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)

    if position_ids.shape[0] != query.shape[0]:
        position_ids = position_ids.expand(query.shape[0], -1)
    # A sliding-window layer (Mistral, Gemma 3's local layers) keeps key j for query i when 0 <= i - j < window
    # (transformers' sliding_window_overlay). Its mask must be applied here: sdpa_varlen_mask gives no mask for
    # packed rows, so falling back to `sdpa` would attend causally across samples and past the window.
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    return packed_attention(query, key, value, position_ids, dropout, scaling, window), None


@torch.compiler.disable
def packed_attention(query, key, value, position_ids, dropout: float, scaling: float | None, window: int | None):
    """Causal attention within each packed sample: (B, H, T, D) in, (B, T, H, D) contiguous out (one layout
    whatever the spans, so that a compiled graph resuming after this call sees the same strides every time).

    Run eagerly under `torch_compile`: the spans are Python data read off position_ids, and a compiled graph
    would guard on their count and lengths and recompile for every new packing of a row (29 recompiles in 12
    steps of a tiny model, 158 s against 12 s eager); outside the compiled graph the rest of the layer stays
    compiled and the spans change nothing."""
    spans = sample_spans(position_ids)
    gqa = key.shape[1] != query.shape[1]

    def causal(q, k, v):
        if window and q.shape[2] > window:
            n = q.shape[2]
            mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril().triu(1 - window)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                                  enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True,
                                              enable_gqa=gqa)

    if all(len(row) == 1 for row in spans):
        out = causal(query, key, value)
    elif query.is_cuda:
        with cuda_span_backends():
            out = per_span(spans, query, key, value, causal)
    else:
        out = per_span(spans, query, key, value, causal)
    return out.transpose(1, 2).contiguous()


def cuda_span_backends():
    """SDPA backends for the per-span calls on CUDA: flash, then memory-efficient, then math; not cuDNN. cuDNN's
    attention plans a graph for every new sequence length (~2.5 ms of CPU each, H200, torch 2.11), and packed
    spans bring new lengths at every step: 2,568 span calls took 13 s of CPU for 0.2 s of GPU work."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def per_span(spans, query, key, value, causal):
    """`causal` attention of each span of each row, concatenated back into (B, H, T, D)."""
    # unbind / split rather than indexing: their backward is one stack / cat, where every indexed slice
    # would scatter its gradient into a zero-filled full-size tensor.
    rows = []
    for row, q_row, k_row, v_row in zip(spans, query.unbind(0), key.unbind(0), value.unbind(0)):
        lengths = [e - s for s, e in row]
        pieces = [
            causal(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0))
            for q, k, v in zip(q_row.split(lengths, 1), k_row.split(lengths, 1), v_row.split(lengths, 1))
        ]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    return torch.cat(rows, dim=0)


def sdpa_varlen_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """No mask where the attention function finds the samples itself; transformers' sdpa mask elsewhere."""
    if attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        **kwargs,
    )


def choose_attention(config, requested: str) -> str:
    """The attn_implementation to load `config` with: `requested`, unless it would compute something else.

    Attention logit softcapping (Gemma 2: `tanh(scores / cap) * cap` before the softmax) cannot be expressed
    through SDPA: transformers refuses `sdpa` for Gemma 2 and would silently drop the cap for a softcapping
    config it does not refuse. So the default `sdpa_varlen` falls back to `eager`, which applies the cap (and
    is exact for packed rows through its block mask), with the reason logged; an explicit `sdpa` is refused.

    Raises:
        ConfigError: `attn_implementation: sdpa` for a model with attention logit softcapping.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text, "attn_logit_softcapping", None)
    if not softcap:
        return requested
    family = getattr(text, "model_type", "this model")
    if requested in (NAME, "varlen_attn"):
        logger.info("%s uses attention logit softcapping (attn_logit_softcapping=%s), which %s cannot "
                    "apply; attention falls back to eager (exact, slower)", family, softcap, requested)
        return "eager"
    if requested == "sdpa":
        raise ConfigError(f"{family} uses attention logit softcapping (attn_logit_softcapping={softcap}), which "
                          "attn_implementation 'sdpa' cannot apply; set attn_implementation: eager (or leave it "
                          "unset: lmforge then picks eager for this model)")
    return requested


AttentionInterface.register(NAME, sdpa_varlen_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_varlen_mask)
