"""LoRA+ (Hayou et al. 2024, arXiv:2402.12354): the B matrices learn `ratio` times faster than the A matrices.

    finetuning_type: lora
    learning_rate: 1.0e-4
    loraplus_lr_ratio: 16          # B (and 1-D params): 1.6e-3; A: 1.0e-4
    loraplus_lr_embedding: 1.0e-6  # B of LoRA on embedding layers

    groups = loraplus_param_groups(model, lr=1e-4, ratio=16, embedding_lr=1e-6, weight_decay=0.01,
                                   decay_names=trainer.get_decay_parameter_names(model))

Same grouping as LLaMA-Factory's LoRA+ optimizer: `lora_embedding_B` -> the embedding rate; `lora_B` and every
1-D trainable parameter (biases, norms, DoRA magnitudes) -> lr x ratio; everything else trainable (A matrices,
`lora_embedding_A`, modules_to_save copies) -> lr. Weight decay follows the trainer's decay names (matrices
decay; 1-D params and, by default, embeddings do not). The optimizer class and its other settings stay the
trainer's (`optim`): only the groups change. LoRA+ adds no state, so `lmforge estimate` is unchanged by it.
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from lmforge.logging import get_logger

logger = get_logger(__name__)


def loraplus_param_groups(
    model: nn.Module,
    lr: float,
    ratio: float,
    embedding_lr: float,
    weight_decay: float,
    decay_names: Collection[str] | None = None,
) -> list[dict]:
    """The optimizer's param groups for LoRA+ (empty groups dropped), each with its own `lr`.

    Args:
        model: the (PEFT) model; only parameters with `requires_grad` are grouped.
        lr: the learning rate of the A matrices (`learning_rate`).
        ratio: `loraplus_lr_ratio`; B matrices get `lr * ratio`.
        embedding_lr: `loraplus_lr_embedding`, the rate of `lora_embedding_B`.
        weight_decay: the decay of decaying groups.
        decay_names: parameter names that decay; default every parameter with 2 or more dimensions.
    """
    decays = (lambda name, p: name in decay_names) if decay_names is not None else (lambda name, p: p.ndim >= 2)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_embedding_B" in name:
            kind = "embedding"
        elif "lora_B" in name or param.ndim == 1:
            kind = "lora_b"
        else:
            kind = "lora_a"
        buckets.setdefault((kind, decays(name, param)), []).append(param)
    rates = {"lora_a": lr, "lora_b": lr * ratio, "embedding": embedding_lr}
    groups = [
        {"params": params, "lr": rates[kind], "weight_decay": weight_decay if decay else 0.0, "loraplus": kind}
        for (kind, decay), params in sorted(buckets.items())
    ]
    logger.info("LoRA+: B matrices at lr %.3g (ratio %g), A at %.3g, embedding B at %.3g", lr * ratio, ratio, lr,
                embedding_lr)
    return groups
