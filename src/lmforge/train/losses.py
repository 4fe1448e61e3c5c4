"""Loss functions as pure tensor functions: no trainer, no model, no config.

    from lmforge.train.losses import shift_labels, token_cross_entropy

    targets = shift_labels(batch["labels"], batch.get("position_ids"))          # [B, T]
    hidden = decoder_output.last_hidden_state                                   # [B, T, H], before lm_head
    loss_sum = token_cross_entropy(hidden, lm_head.weight, targets)   # chunk size chosen per device
    loss = loss_sum / num_items_in_batch   # DESIGN.md §7: divided by the supervised tokens of the whole step

Memory (why the vocabulary projection lives here): a causal LM's `lm_head` followed by
`F.cross_entropy(logits.float())` — what transformers does — materialises [B*T, V] logits in the model
dtype, an fp32 copy, the fp32 log-softmax and, in backward, fp32 gradients of the same size: for B*T = 4096
and V = 152k that is 2.5 GB per fp32 copy. `token_cross_entropy` instead projects only the supervised
positions, `chunk_size` tokens at a time, so at most one chunk of fp32 logits exists in forward and again in
backward (see `benchmarks/chunked_loss_memory.py` for measured peaks).
"""

from __future__ import annotations

from typing import Literal

import torch

from lmforge.arith.loss_chunks import default_chunk_size as _chunk_for_device_type
from torch import Tensor

from lmforge.types import IGNORE_INDEX


def shift_labels(labels: Tensor, position_ids: Tensor | None = None) -> Tensor:
    """Targets aligned with the inputs: `out[..., t]` is the label of token `t + 1`.

    The last position of each row predicts nothing (IGNORE_INDEX). With packed rows, `position_ids`
    restart at 0 where a new sample starts; the token just before such a start is the last token of the
    previous sample, and its "next token" belongs to another sample, so it gets IGNORE_INDEX too. Without
    this, packing would train every sample's last token to predict the first token of an unrelated one —
    transformers' own shift (`ForCausalLMLoss`) does not look at position_ids.

    Args:
        labels: [..., T] token labels with IGNORE_INDEX on unsupervised positions (not yet shifted).
        position_ids: [..., T] (broadcastable to `labels`), or None for unpacked rows. Pass them only when
            they mark packed samples; padded rows whose position_ids count on through the padding are
            fine too (no restart at 0 means no boundary).

    Returns:
        A new tensor shaped like `labels`.
    """
    out = torch.full_like(labels, IGNORE_INDEX)
    out[..., :-1] = labels[..., 1:]
    if position_ids is not None:
        starts_next = position_ids[..., 1:].eq(0)  # token t+1 opens a new sample -> token t ends one
        out[..., :-1].masked_fill_(starts_next, IGNORE_INDEX)
    return out


def token_cross_entropy(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    *,
    chunk_size: int | None = None,
    lm_head_bias: Tensor | None = None,
    logit_softcap: float | None = None,
    reduction: Literal["sum", "none"] = "sum",
) -> Tensor:
    """Cross-entropy of `hidden @ lm_head_weight.T (+ bias)` against `labels`, without full-batch logits.

    Equal to `F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction=...)` on the
    full logits (with `logits = cap * tanh(logits / cap)` when `logit_softcap` is set, as Gemma 2 does), and
    so are its gradients w.r.t. `hidden`, `lm_head_weight` and `lm_head_bias`. Only positions whose label is
    not IGNORE_INDEX are projected at all (on SFT data, where prompts are masked, that alone skips much of
    the work); they are processed `chunk_size` at a time, each chunk's logits upcast to fp32 for the
    log-softmax. Backward recomputes each chunk's logits instead of keeping them (see `_ChunkedLinearCE`).

    The matmul runs in the autocast dtype when autocast is on for the tensors' device, else in the common
    dtype of `hidden` and `lm_head_weight`; the softmax is always fp32, like transformers' `logits.float()`.

    Args:
        hidden: [N, H] (or [..., H]) final hidden states, the lm_head's input.
        lm_head_weight: [V, H] output projection (`model.get_output_embeddings().weight`).
        labels: [N] (or [...] matching `hidden`) targets ALREADY SHIFTED, so `labels[i]` is what
            `hidden[i]` should predict (see `shift_labels`); IGNORE_INDEX positions are skipped. Labels
            outside [0, V) are an error, as in `F.cross_entropy` (on CUDA a device-side assert).
        chunk_size: tokens per chunk; None picks `default_chunk_size(V, device)`. Beyond the gradients
            themselves, the peak is one fp32 [chunk_size, V] buffer, plus half of one for the gradient cast
            to a 16-bit compute dtype (one more fp32 buffer with a softcap): 125 MiB per fp32 buffer at
            chunk 1024 and V = 32k.
        lm_head_bias: optional [V] bias of the projection.
        logit_softcap: optional cap; logits become `cap * tanh(logits / cap)` before the softmax.
        reduction: "sum" -> a scalar, the sum over supervised tokens (divide by the step's token count
            yourself, DESIGN.md §7); "none" -> [M] fp32 per-token losses of the M supervised positions, in
            the order they appear in the flattened `labels` (for per-sample weighting).

    Returns:
        fp32 scalar or [M] tensor. With no supervised token: 0 (or an empty tensor), still connected to
        the graph so every parameter gets a (zero) gradient, as DDP needs.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    if chunk_size is None:
        chunk_size = default_chunk_size(lm_head_weight.shape[0], hidden.device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    if labels.shape[0] != hidden.shape[0]:
        raise ValueError(f"labels have {labels.shape[0]} positions but hidden has {hidden.shape[0]}")
    # Select supervised positions first. `nonzero` syncs with the device once per call; in exchange every
    # later buffer is sized by supervised tokens, not by B*T. index_select's backward scatters the gradient
    # back and leaves zeros on ignored positions.
    keep = labels.ne(IGNORE_INDEX).nonzero().squeeze(1)
    per_token = _ChunkedLinearCE.apply(
        hidden.index_select(0, keep), lm_head_weight, lm_head_bias, labels.index_select(0, keep),
        chunk_size, logit_softcap,
    )
    return per_token.sum() if reduction == "sum" else per_token




def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _logits_workspace(rows: int, vocab: int, dtype: torch.dtype, device) -> tuple[Tensor, Tensor | None]:
    """One fp32 [rows, V] buffer for every chunk's logits, plus one in the compute dtype when it is not fp32.

    Why reuse rather than allocate per chunk: at chunk 1024 and V = 32k these are 131 MB and 66 MB, above
    glibc's largest mmap threshold (32 MiB), so on CPU every fresh buffer is a new mapping whose pages the
    kernel faults in and zeroes: measured on a 2-core CPU, fresh buffers per chunk made ~450k page faults per
    step of a small-model SFT run, most of its system time. (CUDA's caching allocator makes reuse free there.)
    """
    logits32 = torch.empty(rows, vocab, dtype=torch.float32, device=device)
    low = None if dtype == torch.float32 else torch.empty(rows, vocab, dtype=dtype, device=device)
    return logits32, low


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None, softcap: float | None,
                  workspace: tuple[Tensor, Tensor | None]):
    """fp32 logits of one chunk (softcapped if asked) in the workspace and, with a softcap, tanh(z / cap)."""
    logits32, low = workspace
    rows = h.shape[0]
    logits = logits32[:rows]
    target = logits if low is None else low[:rows]
    if bias is None:
        torch.mm(h, weight.T, out=target)
    else:
        torch.addmm(bias, h, weight.T, out=target)
    if low is not None:
        logits.copy_(target)
    if softcap is None:
        return logits, None
    tanh = logits.div_(softcap).tanh_()  # in place: the raw logits are not needed again
    return tanh * softcap, tanh


class _ChunkedLinearCE(torch.autograd.Function):
    """Per-token CE of a linear projection, one chunk of tokens at a time, recomputing logits in backward.

    Why a hand-written Function rather than `torch.utils.checkpoint` around each chunk: both recompute a
    chunk's logits in backward (4 matmuls per chunk instead of 3), but under checkpoint autograd replays
    the chunk's graph and keeps its intermediates (model-dtype logits, fp32 copy, log-softmax, and the
    gradient of each), several chunk-sized buffers at once. Here forward reduces each chunk's logits to a
    log-sum-exp in place and backward forms softmax - onehot in place in the one fp32 logits buffer, so a
    single chunk-sized fp32 buffer is live at a time. Forward saves only the inputs (the supervised rows
    of hidden) and one fp32 log-sum-exp per token.

    Why not the other fused form, computing gradients during forward (as Liger's fused linear CE does):
    it must know the upstream gradient in forward, which holds only for a scalar sum, not for
    reduction="none" with per-sample weights; it spends the backward work even under evaluation; and it
    keeps a weight-sized d_weight buffer alive from the loss forward until the end of the model's backward.
    Recomputing costs one extra [chunk, H] x [H, V] matmul per chunk, small next to the model itself.

    The matmuls run with autocast off, in a dtype fixed at forward (`_compute_dtype`), so backward —
    which autograd runs outside autocast — uses the same precision as forward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, softcap):
        dtype = _compute_dtype(hidden, weight)
        device_type = hidden.device.type
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(losses)
        with torch.autocast(device_type, enabled=False):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            workspace = _logits_workspace(min(chunk_size, hidden.shape[0]), weight.shape[0], dtype, hidden.device)
            for start in range(0, hidden.shape[0], chunk_size):
                end = min(start + chunk_size, hidden.shape[0])
                logits = _chunk_logits(hidden[start:end].to(dtype), w, b, softcap, workspace)[0]
                target = logits.gather(1, labels[start:end, None]).squeeze(1)
                # log-sum-exp in place (torch.logsumexp would allocate a second chunk-sized buffer).
                row_max = logits.amax(dim=-1, keepdim=True)
                lse[start:end] = logits.sub_(row_max).exp_().sum(dim=-1).log_().add_(row_max.squeeze(1))
                losses[start:end] = lse[start:end] - target
                del logits
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.chunk_size, ctx.softcap, ctx.dtype = chunk_size, softcap, dtype
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        dtype, softcap, chunk = ctx.dtype, ctx.softcap, ctx.chunk_size
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            # Accumulate over chunks in the compute dtype, as autograd would sum per-chunk weight gradients.
            d_hidden = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if need_h else None
            d_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
            d_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
            workspace = _logits_workspace(min(chunk, hidden.shape[0]), weight.shape[0], dtype, hidden.device)
            for start in range(0, hidden.shape[0], chunk):
                end = min(start + chunk, hidden.shape[0])
                h = hidden[start:end].to(dtype)
                logits, tanh = _chunk_logits(h, w, b, softcap, workspace)
                # d loss_i / d logits_i = softmax(logits_i) - onehot(label_i), built in place.
                grad = logits.sub_(lse[start:end, None]).exp_()
                rows = torch.arange(end - start, device=grad.device)
                grad[rows, labels[start:end]] -= 1.0
                grad.mul_(grad_losses[start:end, None])
                if tanh is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
                    grad.mul_(tanh.square_().neg_().add_(1.0))
                    del tanh
                if need_b:
                    d_bias += grad.sum(0)
                if workspace[1] is not None:  # the compute-dtype buffer is free again once copied out
                    grad = workspace[1][: end - start].copy_(grad)
                if need_h:
                    torch.mm(grad, w, out=d_hidden[start:end])
                if need_w:
                    d_weight.addmm_(grad.T, h)
                del logits, grad
        return (
            None if d_hidden is None else d_hidden.to(hidden.dtype),
            None if d_weight is None else d_weight.to(weight.dtype),
            None if d_bias is None else d_bias.to(bias.dtype),
            None, None, None,
        )


def default_chunk_size(vocab_size: int, device: torch.device | str) -> int:
    """`arith.loss_chunks.default_chunk_size` for a torch device."""
    return _chunk_for_device_type(vocab_size, torch.device(device).type)
