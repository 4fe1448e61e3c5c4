"""What the rm, dpo, kto, grpo and ppo trainers share: sequence log-probs, the reference model, per-step metrics.

Reference model (dpo, kto; grpo with beta > 0; ppo), cheapest first:
  - `precompute_ref_log_probs: true`: the data is scored once before training (`precompute_reference`) and
    the scores travel in the batches; no reference exists during training.
  - LoRA: the policy with its adapters switched off (`disable_adapter`) is the reference: no second copy.
  - `ref_model: DIR`: that model, loaded frozen.
  - full / freeze: a frozen copy of the model as loaded, before any update.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lmforge.logging import get_logger
from lmforge.model.hidden_states import forward_hidden
from lmforge.train.losses import shift_labels
from lmforge.types import IGNORE_INDEX

logger = get_logger(__name__)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def load_reference(cfg, policy: nn.Module) -> nn.Module | None:
    """The reference model to keep during training, or None when the policy serves as its own (LoRA).

    Loaded from disk rather than deep-copied, so it carries no checkpointing hooks or trainable state.
    """
    from lmforge.model.loader import load_model

    if cfg.preference.ref_model:
        model_args = replace(cfg.model, model_name_or_path=cfg.preference.ref_model, adapter_name_or_path=None)
    elif is_peft(policy):
        return None
    else:
        model_args = cfg.model
    reference = load_model(model_args, replace(cfg.adapter, finetuning_type="full"), is_trainable=False)
    logger.info("reference model: %s (frozen copy)", model_args.model_name_or_path)
    return reference


class MetricStore:
    """Sums and counts of per-sample metrics between two logs, split by train / eval."""

    def __init__(self):
        self._sums: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._counts: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}

    def add(self, split: str, name: str, values: Tensor) -> None:
        values = values.detach().float().reshape(-1)
        self._sums[split][name] += float(values.sum())
        self._counts[split][name] += values.numel()

    def add_mean(self, split: str, name: str, mean: float, count: float) -> None:
        """A mean already taken over `count` items (tokens, say), weighted as those items would be."""
        self._sums[split][name] += float(mean) * float(count)
        self._counts[split][name] += float(count)

    def pop(self, split: str, reduce=None) -> dict[str, float]:
        """Means since the last pop; `reduce(tensor)` sums across processes when given."""
        names = sorted(self._sums[split])
        if not names:
            return {}
        totals = torch.tensor([[self._sums[split][n], self._counts[split][n]] for n in names], dtype=torch.float64)
        if reduce is not None:
            totals = reduce(totals)
        self._sums[split].clear()
        self._counts[split].clear()
        return {name: float(s / c) for name, (s, c) in zip(names, totals.tolist()) if c > 0}


class PreferenceMixin:
    """For a BaseTrainer subclass: log-probs of responses, reference scoring, metrics merged into the logs."""

    reports_perplexity = False  # a preference loss is not a token cross-entropy

    def __init__(self, *args, preference=None, reference: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ft = preference  # the preference group: pref_beta, pref_loss, ...
        self.reference = reference
        self.metrics = MetricStore()
        # The losses here are means over the micro-batch's pairs; transformers must divide by the number
        # of accumulation steps itself (it does not when it thinks the model normalises its own loss).
        self.model_accepts_loss_kwargs = False
        if reference is not None:
            reference.to(self.args.device)

    def sequence_log_probs(self, model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor):
        """(sum of log p(label) over each row's response tokens [N], response token count [N])."""
        targets = shift_labels(labels)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self._uses_chunked_loss(model):
            _, hidden = forward_hidden(model, inputs)
            per_token = -self.projected_cross_entropy(model, hidden, targets, reduction="none")
        else:
            logits = model(**inputs).logits.float()
            kept = targets.ne(IGNORE_INDEX)
            per_token = -F.cross_entropy(logits[kept], targets[kept], reduction="none")
        rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
        rows = rows[targets.ne(IGNORE_INDEX)]
        sums = torch.zeros(targets.shape[0], dtype=per_token.dtype, device=per_token.device).index_add(0, rows, per_token)
        counts = torch.bincount(rows, minlength=targets.shape[0])
        return sums, counts

    @torch.no_grad()
    def reference_log_probs(self, model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        """Summed response log-probs under the reference: the held reference, or the policy without adapters."""
        with self.as_reference(model) as reference, self.accelerator.autocast():
            return self.sequence_log_probs(reference, input_ids, attention_mask, labels)[0]

    @contextmanager
    def as_reference(self, model: nn.Module):
        """The model that scores as the reference while the block runs: the held reference, or `model` (the
        policy, possibly wrapped) with its adapter switched off."""
        if self.reference is not None:
            yield self.reference
            return
        with self.accelerator.unwrap_model(model).disable_adapter():
            yield model

    def split_name(self, model: nn.Module) -> str:
        return "train" if model.training else "eval"

    def _reduce(self):
        if self.accelerator.num_processes == 1:
            return None
        return lambda totals: self.accelerator.reduce(totals.to(self.args.device), "sum").cpu()

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the means of the steps since the last one
            means = self.metrics.pop("train", self._reduce())
            logs = {**logs, **{k: round(v, 6) for k, v in means.items()}}
        return super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        # Into the evaluation's own metrics, so `evaluate()` returns them too, not only its log.
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        means = self.metrics.pop("eval", self._reduce())
        output.metrics.update({f"{prefix}_{k}": round(v, 6) for k, v in means.items()})
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


@torch.no_grad()
def precompute_reference(trainer, data, collator, score_batch) -> None:
    """Score train and eval data once with the reference, store the scores as columns, drop the reference.

    `score_batch(batch on device) -> {column: [B] tensor}`. Runs under the trainer's autocast, like training.
    """
    policy = trainer.model
    was_training = policy.training
    policy.eval()
    batch_size = trainer.args.per_device_eval_batch_size
    for split in ("train", "eval"):
        dataset = getattr(data, split)
        if dataset is None:
            continue
        columns: dict[str, list[float]] = defaultdict(list)
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
            batch = {k: v.to(trainer.args.device) for k, v in batch.items() if torch.is_tensor(v)}
            with trainer.accelerator.autocast():
                for name, values in score_batch(batch).items():
                    columns[name].extend(values.float().cpu().tolist())
        for name, values in columns.items():
            dataset = dataset.add_column(name, values)
        setattr(data, split, dataset)
        logger.info("%s: reference log-probs of %d rows precomputed", split, len(dataset))
    policy.train(was_training)
    trainer.train_dataset, trainer.eval_dataset = data.train, data.eval
    trainer.reference = None  # freed: from now on the scores travel in the batches
