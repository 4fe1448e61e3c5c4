"""Training stages: one module per stage holds its `run_<stage>(cfg)` (and its trainer's compute_loss).

Each stage is declared once, by its `Stage` spec in `lmforge.stages` (torch-free, so config rules and the data
pipeline can read it); the spec names its run function, which is imported only when that stage runs.
"""

from __future__ import annotations

from collections.abc import Callable

from lmforge.stages import STAGES


def get_stage(name: str) -> Callable:
    """The run function of stage `name` (unknown names raise a ConfigError with a did-you-mean)."""
    return STAGES.get(name).resolve_run()
