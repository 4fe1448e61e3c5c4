"""Training stages, looked up by the `stage` key."""

from __future__ import annotations

from collections.abc import Callable

from lmforge.registry import Registry

STAGES: Registry[Callable] = Registry("stage")


def get_stage(name: str) -> Callable:
    # Imported here so each stage's dependencies load only when that stage runs.
    from lmforge.train.stages import dpo, kto, pt, rm, sft  # noqa: F401

    return STAGES.get(name)
