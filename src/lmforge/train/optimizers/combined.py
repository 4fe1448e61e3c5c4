"""Several torch optimizers behind one `torch.optim.Optimizer`, for transformers.Trainer and its scheduler.

Muon updates the hidden matrices and AdamW the rest (two optimizers); layer-wise GaLore / APOLLO keep one
optimizer per parameter and step it from a post-accumulate-grad hook, during backward. The Trainer, accelerate
and the LR scheduler see one optimizer: its `param_groups` are the very group dicts of the parts (the scheduler's
lr reaches each part) and its `state` is one dict the parts share (parameters are disjoint), so
`state_dict()` / `load_state_dict()` of a checkpoint cover every part.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch


class CombinedOptimizer(torch.optim.Optimizer):
    """`step` and `zero_grad` run every part in order; checkpoints hold all their states."""

    def __init__(self, parts: Iterable[torch.optim.Optimizer]):
        self.parts = [part for part in parts if part.param_groups]
        params = [p for part in self.parts for group in part.param_groups for p in group["params"]]
        # Optimizer.__init__ sets up the hook registries state_dict() and the scheduler's step counter use;
        # its own groups are replaced by the parts' right after.
        super().__init__(params, {})
        self._link()

    def _link(self) -> None:
        self.param_groups = [group for part in self.parts for group in part.param_groups]
        shared: defaultdict = defaultdict(dict)
        for part in self.parts:
            shared.update(part.state)
            part.state = shared
        self.state = shared

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def load_state_dict(self, state_dict: dict) -> None:
        # Optimizer.state_dict numbers parameters in group order; hand each part its slice of the groups and
        # the states of their parameters (load_state_dict maps saved numbers to parameters by that order).
        groups, start = state_dict["param_groups"], 0
        if len(groups) != len(self.param_groups):
            raise ValueError(f"checkpoint has {len(groups)} optimizer groups, this optimizer {len(self.param_groups)}")
        for part in self.parts:
            own = groups[start:start + len(part.param_groups)]
            start += len(part.param_groups)
            ids = {i for group in own for i in group["params"]}
            part.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i in ids},
                                  "param_groups": own})
        self._link()


class LayerwiseOptimizer(CombinedOptimizer):
    """One optimizer per parameter, stepped as soon as that parameter's gradient is complete (then freed).

    Only one gradient exists at a time, so gradient accumulation is impossible (config/validate.py) and the
    Trainer's clip and grad_norm see no gradients (grad_norm logs 0). `step` and `zero_grad` do nothing.
    """

    def __init__(self, per_param: dict[torch.nn.Parameter, torch.optim.Optimizer]):
        super().__init__(per_param.values())

        def step_now(param: torch.nn.Parameter) -> None:
            if param.grad is not None:
                per_param[param].step()
                per_param[param].zero_grad(set_to_none=True)

        self.handles = [param.register_post_accumulate_grad_hook(step_now) for param in per_param]

    def step(self, closure: Callable[[], float] | None = None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass
