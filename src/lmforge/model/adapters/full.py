"""Full fine-tuning: every parameter of the model trains.

    finetuning_type: full
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lmforge.config.adapter_args import AdapterArguments
from lmforge.logging import get_logger

logger = get_logger(__name__)


def apply_full(
    model: nn.Module,
    adapter: AdapterArguments,
    *,
    is_trainable: bool,
    adapter_paths: Sequence[str] = (),
) -> nn.Module:
    """Mark every parameter trainable (when training); the model is returned unchanged otherwise.

    The loader keeps trainable weights in fp32 afterwards, so the optimizer never steps half-precision
    master weights.
    """
    if is_trainable:
        logger.info("fine-tuning method: full")
        model.requires_grad_(True)
    return model
