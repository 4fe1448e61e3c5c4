"""Selective activation checkpointing: keep what is expensive to recompute, recompute the rest.

Whole-layer checkpointing keeps only each layer's input and reruns the whole layer in backward, matmuls
included (about a third more compute). Selective checkpointing (torch's SAC, as in torchtitan) runs the
layer under checkpoint too, but saves the outputs of the matmuls and of the attention kernel during forward
and recomputes only what lies between them in backward: norms, casts, rotary embeddings, activation
functions, residual adds. Those are cheap (a few percent of a step) but hold most of a layer's activation
memory — under autocast every projection input is saved once more as a bf16 copy, the MLP keeps
gate, up, act(gate) and their product. On small-qwen2 (4 x 1024 packed tokens) it keeps about 40% of the
activation memory of no checkpointing, for about 5% more time, where whole-layer checkpointing costs 30%.
The gradients are those of the plain model (tests/model/test_loader.py).

It lives in config/ because it is what the `selective_checkpointing` key means to torch: TrainingArguments
hands it to the Trainer as the checkpoint `context_fn`, and the model loader uses the same policy.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

_aten = torch.ops.aten
SAVED_OPS = frozenset(
    op
    for name in (
        "mm", "addmm", "bmm", "baddbmm",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    )
    if (op := getattr(getattr(_aten, name, None), "default", None)) is not None
)
"""aten ops whose outputs are kept; everything else inside a checkpointed layer is recomputed."""


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def selective_checkpoint_context():
    """`context_fn` for torch.utils.checkpoint (non-reentrant): a fresh pair of contexts per call."""
    return create_selective_checkpoint_contexts(_policy)
