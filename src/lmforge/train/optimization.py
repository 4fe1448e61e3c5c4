"""What transformers.Trainer leaves to the user for pretraining-grade optimisation (mixed into BaseTrainer).

- Weight decay on matrix weights only: never on norm weights or biases (1-D), and not on embeddings unless
  `weight_decay_embeddings` (decaying rare tokens' rows towards zero hurts them most; OLMo's default).
- `warmup_stable_decay` with its decay length from `decay_ratio`; `constant` with warm-up is transformers'
  `constant_with_warmup` (translated in the config).
- Gradient clipping at `warmup_max_grad_norm` during warm-up (early gradients are large and informative),
  `max_grad_norm` afterwards; the share of clipped steps since the last log is logged as `grad_clip_rate`.
- `perplexity` (and `eval_perplexity`) next to every loss.
- The decay steps and the warm-up clip are computed per call (`scheduler_kwargs`, `grad_clip_limit`); the
  user's arguments are never written to.
- A NaN/inf loss or gradient norm stops the run at that step, before the update, naming the step and the
  batch's source, or with `skip_nonfinite_steps` drops that update and goes on (counted as `skipped_steps`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler
from transformers.trainer_utils import SchedulerType
from transformers.utils import is_sagemaker_mp_enabled

from lmforge.errors import UserError
from lmforge.logging import get_logger

logger = get_logger(__name__)


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss or gradient."""


class OptimizationMixin:
    _clip_steps = 0
    _clipped_steps = 0
    _skipped_steps = 0
    _nonfinite_batch: str | None = None

    # -- optimizer and schedule ------------------------------------------------------------------------

    def get_decay_parameter_names(self, model) -> list[str]:
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        return [
            name
            for name, param in model.named_parameters()
            if param.ndim >= 2 and (self.args.weight_decay_embeddings or id(param) not in embeddings)
        ]

    def scheduler_kwargs(self, num_training_steps: int) -> dict | None:
        """`lr_scheduler_kwargs` with the step counts known only at train start filled in (never written to args).

        warmup_stable_decay: `num_decay_steps` = `decay_ratio` of the steps, unless the user gave it.
        """
        kwargs = self.args.lr_scheduler_kwargs
        if self.args.lr_scheduler_type == SchedulerType.WARMUP_STABLE_DECAY:
            kwargs = dict(kwargs or {})
            kwargs.setdefault("num_decay_steps", max(1, round(self.args.decay_ratio * num_training_steps)))
        return kwargs

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_scheduler_type == SchedulerType.WARMUP_STABLE_DECAY:
            # transformers' create_scheduler reads the kwargs from args; build the same schedule with the
            # computed ones instead of writing them into the user's arguments.
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.scheduler_kwargs(num_training_steps),
            )
            # as transformers marks a scheduler it made: a later train() call builds a fresh one (hf_hooks.py)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # -- per step: loss health, clipping ---------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all() and self._nonfinite_batch is None:
            self._nonfinite_batch = _describe_batch(inputs)
        return loss

    def grad_clip_limit(self) -> float:
        """The clip for the coming update: `warmup_max_grad_norm` during warm-up, `max_grad_norm` after it."""
        warmup = self.args.get_warmup_steps(self.state.max_steps)
        if self.args.warmup_max_grad_norm is not None and self.state.global_step < warmup:
            return self.args.warmup_max_grad_norm
        return self.args.max_grad_norm

    def _clip_grad_norm(self, model):
        limit = self.grad_clip_limit()
        if any(p.grad is not None and p.grad.is_sparse for p in model.parameters()):
            norm = clip_sparse_aware(model.parameters(), limit)  # BAdam's ratio mode
        elif limit == self.args.max_grad_norm:
            norm = super()._clip_grad_norm(model)
        else:
            norm = self._clip_grad_norm_to(model, limit)
        value = float(norm)
        if math.isfinite(value):
            self._clip_steps += 1
            self._clipped_steps += value > limit
        return norm

    def _clip_grad_norm_to(self, model, limit: float):
        """transformers' `_clip_grad_norm` with `limit` in place of `args.max_grad_norm` (which it reads).

        Mirrors its dispatch (SageMaker MP fp16, gradients on mixed device meshes, accelerate's clip that
        covers DDP / FSDP / DeepSpeed); tests/train/test_hf_hooks.py fails when upstream adds a path.
        """
        if is_sagemaker_mp_enabled() and self.args.fp16:
            return self.optimizer.clip_master_grads(limit)
        if self._has_mixed_mesh_grads(model):
            return self._mixed_mesh_grad_norm(model, limit)
        return self.accelerator.clip_grad_norm_(model.parameters(), limit)

    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, after clipping (if any) and before the update.
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm) if norm is not None else 0.0
        if self._nonfinite_batch is not None or not math.isfinite(value):
            self._handle_nonfinite(model, value)
        return norm

    def _handle_nonfinite(self, model, grad_norm: float) -> None:
        step = self.state.global_step + 1
        what = "loss" if self._nonfinite_batch is not None else "gradient norm"
        source = self._nonfinite_batch or "see the step's batch"
        self._nonfinite_batch = None
        if not self.args.skip_nonfinite_steps:
            raise NonFiniteLossError(
                f"non-finite {what} at step {step} (grad norm {grad_norm}); batch: {source}. Nothing was updated "
                "or saved; resume from the last checkpoint with a lower learning_rate, or set "
                "'skip_nonfinite_steps: true' to skip such updates"
            )
        model.zero_grad(set_to_none=True)  # no gradient: the optimizer leaves every parameter as it is
        self._skipped_steps += 1
        logger.warning("step %d: non-finite %s, update skipped (batch: %s)", step, what, source)

    # -- logs ------------------------------------------------------------------------------------------

    reports_perplexity = True  # exp(loss) means something only for a token-level cross-entropy (pt, sft)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for key in ("loss", "eval_loss"):
            if self.reports_perplexity and isinstance(logs.get(key), (int, float)):
                name = "perplexity" if key == "loss" else "eval_perplexity"
                logs[name] = math.exp(logs[key]) if logs[key] < 700 else float("inf")
        if "loss" in logs:
            if self._clip_steps:
                logs["grad_clip_rate"] = self._clipped_steps / self._clip_steps
            self._clip_steps = self._clipped_steps = 0
            if self._skipped_steps:
                logs["skipped_steps"] = self._skipped_steps
        super().log(logs, *args, **kwargs)


def _describe_batch(inputs: dict) -> str:
    sources = inputs.get("_source")
    if sources:
        return ", ".join(map(str, sources[:8])) + (", ..." if len(sources) > 8 else "")
    ids = inputs.get("input_ids")
    shape = "x".join(map(str, ids.shape)) if ids is not None else "?"
    return f"{shape} tokens, first ids {ids[0, :8].tolist() if ids is not None else '?'}"


def clip_sparse_aware(parameters, limit: float) -> torch.Tensor:
    """clip_grad_norm_ for gradients some of which are sparse (BAdam's ratio mode keeps only the updated entries):
    torch's own norm has no sparse kernel. One process only (the config refuses BAdam with DeepSpeed / FSDP)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = [(g.coalesce().values() if g.is_sparse else g).float().pow(2).sum() for g in grads]
    norm = torch.stack(squares).sum().sqrt() if squares else torch.tensor(0.0)
    if limit and limit > 0:
        scale = (limit / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.to(g.device, g.dtype))
    return norm
