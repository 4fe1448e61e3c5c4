"""The rules of `ema_decay` (train/callbacks/ema.py), kept out of validate.py's size."""

from __future__ import annotations

from lmforge.errors import ConfigError


def check_ema(cfg) -> None:
    """The average is kept per process over whole parameters: sharded ones (FSDP, DeepSpeed) are not whole."""
    if cfg.finetuning.ema_decay is None:
        return
    training = cfg.training
    if getattr(training, "fsdp", None) or getattr(training, "deepspeed", None):
        raise ConfigError("ema_decay: not supported with fsdp or deepspeed (their parameters are sharded across "
                          "processes); remove ema_decay, or average saved checkpoints with `lmforge average`")
