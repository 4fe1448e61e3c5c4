"""Say at train start how the model is spread over the processes, so a sharded run can be told from a replicated one.

    [lmforge INFO] distributed: FSDP over 2 processes; this process holds 79,136 of 158,272 parameter elements (50.0%)
"""

from __future__ import annotations

from transformers import TrainerCallback

from lmforge.logging import get_logger

logger = get_logger(__name__)


def local_parameter_share(model) -> tuple[int, int]:
    """(elements this process stores, elements of the whole model); sharded (DTensor) parameters count their shard."""
    local = total = 0
    for param in model.parameters():
        total += param.numel()
        to_local = getattr(param, "to_local", None)  # FSDP2 keeps each parameter as a DTensor shard
        local += to_local().numel() if to_local is not None else param.numel()
    return local, total


class ShardingReportCallback(TrainerCallback):
    def __init__(self, distributed_type: str, num_processes: int):
        self.distributed_type, self.num_processes = distributed_type, num_processes

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.num_processes < 2 or model is None:
            return
        local, total = local_parameter_share(model)
        logger.info(
            "distributed: %s over %d processes; this process holds %s of %s parameter elements (%.1f%%)",
            self.distributed_type, self.num_processes, f"{local:,}", f"{total:,}", 100 * local / max(total, 1),
        )
