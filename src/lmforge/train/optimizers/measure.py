"""Bytes an optimizer keeps for its state, measured: what `lmforge estimate` is checked against.

    measured_state_bytes(optimizer)   # after at least one step (states are created lazily)

Counts every tensor in the state (moments, GaLore / APOLLO projection matrices held by their projector objects),
each storage once. BAdam's state lives in its base optimizer.
"""

from __future__ import annotations

import torch


def measured_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    seen: set[int] = set()
    total = 0

    def add(value, depth: int = 0) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            key = value.untyped_storage().data_ptr() if value.numel() else id(value)
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes() if value.numel() else 0
        elif isinstance(value, dict):
            for item in value.values():
                add(item, depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item, depth + 1)
        elif depth < 3 and hasattr(value, "__dict__") and not isinstance(value, type):
            add(vars(value), depth + 1)  # a projector object and the matrices it holds

    inner = getattr(optimizer, "base_optimizer", None)
    for source in (optimizer, inner) if inner is not None else (optimizer,):
        for state in source.state.values():
            add(state)
    return total
