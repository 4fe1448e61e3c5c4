"""BaseTrainer: transformers.Trainer with lmforge's loss, batching and metric hooks.

The loss (DESIGN.md §7): token losses are summed and divided by the supervised tokens of the whole
optimizer step, across gradient-accumulation micro-batches and ranks — transformers' `num_items_in_batch`
— so bs 1 x accumulation 4 gives the gradient of bs 4. With `loss_weighting: sample` every sample's mean
token loss counts once instead, divided by the number of samples in the step.

The vocabulary projection runs inside the loss, chunk by chunk (`losses.token_cross_entropy`), so full
fp32 logits of the batch never exist: a forward pre-hook hands the lm_head an empty slice and keeps its
input, the final hidden states. The model still runs through its (possibly DDP-wrapped) forward, so
gradient synchronisation is untouched.

Optimizer groups, schedules, clipping and non-finite checks live in `optimization.py`, GaLore / APOLLO / BAdam /
Adam-mini / Muon in `optimizers/` (its mixin builds them in create_optimizer); atomic checkpoints
in `checkpoint.py` (both mixed in). Every transformers.Trainer method overridden here, in those mixins or
in a stage trainer is listed in `hf_hooks.py`, and tests/train/test_hf_hooks.py checks it against the
installed transformers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from accelerate import PartialState
from accelerate.utils import DistributedType
from transformers import Trainer

from lmforge.data.memmap.dataset import EpochPermutationSampler, MemmapChunks
from lmforge.data.samplers import TokenBudgetBatchSampler
from lmforge.logging import get_logger
from lmforge.model.hidden_states import forward_hidden
from lmforge.train.callbacks.sharding import ShardingReportCallback
from lmforge.train.checkpoint import AtomicCheckpointMixin
from lmforge.train.losses import shift_labels, token_cross_entropy
from lmforge.train.optimization import OptimizationMixin
from lmforge.train.optimizers import CustomOptimizerMixin
from lmforge.types import IGNORE_INDEX

logger = get_logger(__name__)


_LOGIT_SCALE_KEYS = ("logit_scale", "logits_scaling", "output_multiplier_scale")


class BaseTrainer(OptimizationMixin, CustomOptimizerMixin, AtomicCheckpointMixin, Trainer):
    def __init__(
        self,
        *args,
        batch_observers: list[Callable[[dict], None]] | None = None,
        loss_chunk_size: int | None = None,
        loss_weighting: str = "token",
        max_tokens_per_batch: int | None = None,
        param_groups: Callable[[nn.Module, list[str]], list[dict]] | None = None,
        **kwargs,
    ):
        # set before Trainer.__init__, which may already build the optimizer (optimizers=... / DeepSpeed paths)
        self.param_groups = param_groups
        super().__init__(*args, **kwargs)
        kind = self.accelerator.state.distributed_type
        self.add_callback(ShardingReportCallback(str(getattr(kind, "value", kind)), self.accelerator.num_processes))
        self.batch_observers = list(batch_observers or [])
        self.loss_chunk_size = loss_chunk_size
        self.loss_weighting = loss_weighting
        self.max_tokens_per_batch = max_tokens_per_batch

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if self.args.fsdp_plugin_args is not None and state.distributed_type == DistributedType.MULTI_CPU:
            # accelerate drops the FSDP plugin when the processes are CPUs (multi-CPU means DDP to it), so an FSDP
            # config would train as plain DDP. FSDP2 runs over gloo on CPU: hand accelerate the plugin it dropped.
            from accelerate.utils import FullyShardedDataParallelPlugin

            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            state.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.is_fsdp_enabled = True

    def create_optimizer(self, model=None):
        # `param_groups(model, decay_names)` (LoRA+: train/loraplus.py) replaces the two decay groups that
        # transformers builds; the optimizer class and its settings stay `optim`'s. Without it nothing changes.
        if self.optimizer is None and self.param_groups is not None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)  # each group carries its own lr
            groups = self.param_groups(opt_model, self.get_decay_parameter_names(opt_model))
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return super().create_optimizer(model)

    # -- batches ---------------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Observation only, but no TrainerCallback event receives the micro-batch (see hf_hooks.py).
        for observe in self.batch_observers:
            observe(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _prepare_inputs(self, inputs):
        # Keys starting with "_" are for observers (e.g. `_token_mask`), never for the model.
        return super()._prepare_inputs({k: v for k, v in inputs.items() if not k.startswith("_")})

    def get_train_dataloader(self) -> DataLoader:
        if not self.max_tokens_per_batch:
            return super().get_train_dataloader()
        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        sampler = TokenBudgetBatchSampler(
            [len(ids) for ids in dataset["input_ids"]], self.max_tokens_per_batch, seed=self.args.seed
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, MemmapChunks):
            # The (seed, epoch) order that makes a resumed run see exactly the chunks it has not seen.
            global_batch = self.args.per_device_train_batch_size * self.args.world_size
            sampler = EpochPermutationSampler(len(dataset), seed=self.args.seed, global_batch=global_batch)
            if sampler.length < len(dataset):
                logger.info(
                    "memmap: %d of %d chunks per epoch (whole global batches of %d); the other %d differ by epoch",
                    sampler.length, len(dataset), global_batch, len(dataset) - sampler.length,
                )
            return sampler
        return super()._get_train_sampler(train_dataset)

    def _get_num_items_in_batch(self, batch_samples, device):
        if self.loss_weighting != "sample" or not self._uses_chunked_loss():
            return super()._get_num_items_in_batch(batch_samples, device)
        count = sum(_count_supervised_samples(b) for b in batch_samples)
        count = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def _finalize_training(self, *args, **kwargs):
        # transformers gathers the loss across ranks at each logging step, but adds the steps since the last
        # log from this rank alone, where it is scaled by the world size (see compute_loss): `train_loss` came
        # out larger with every extra process. Gather that remainder like the logged part.
        if self.accelerator.num_processes > 1:
            remainder = self._tr_loss.detach().reshape(1).to(self.args.device)
            self._tr_loss = self.accelerator.gather(remainder).mean()
        return super()._finalize_training(*args, **kwargs)

    # -- loss ------------------------------------------------------------------------------------------

    def _uses_chunked_loss(self, model=None) -> bool:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        head = model.get_output_embeddings()
        config = getattr(model, "config", None)
        # Only a plain Linear head is projected by hand; a LoRA- or modules_to_save-wrapped head, or a model
        # that rescales its logits, keeps transformers' own loss.
        scaled = any(getattr(config, name, 1.0) not in (None, 1.0) for name in _LOGIT_SCALE_KEYS)
        return self.loss_chunk_size != 0 and type(head) is nn.Linear and not scaled

    def projected_cross_entropy(self, model, hidden: torch.Tensor, targets: torch.Tensor, reduction: str = "sum"):
        """`token_cross_entropy` of `hidden` through the model's output projection (targets already shifted)."""
        unwrapped = self.accelerator.unwrap_model(model)
        head = unwrapped.get_output_embeddings()
        softcap = getattr(unwrapped.config, "final_logit_softcapping", None)
        # Autocast wraps only the model's forward; the projection here needs it too to run in bf16/fp16.
        with self.accelerator.autocast():
            return token_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]),
                head.weight,
                targets.reshape(-1),
                chunk_size=self.loss_chunk_size,
                lm_head_bias=head.bias,
                logit_softcap=softcap,
                reduction=reduction,
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # With a KV cache transformers ignores packed position_ids and lets packed samples attend to each
        # other; training never needs the cache.
        inputs = {**inputs, "use_cache": False}
        if not self._uses_chunked_loss():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs, hidden = forward_hidden(model, inputs)
        targets = shift_labels(labels, inputs.get("position_ids") if "attention_mask" not in inputs else None)
        per_token = self.projected_cross_entropy(
            model, hidden, targets, reduction="none" if self.loss_weighting == "sample" else "sum"
        )
        if self.loss_weighting == "sample":
            loss_sum = _per_sample_mean_sum(per_token, targets, inputs.get("position_ids"))
        else:
            loss_sum = per_token
        if num_items_in_batch is None:
            count = _count_supervised_samples({"labels": labels}) if self.loss_weighting == "sample" else (
                targets.ne(IGNORE_INDEX).sum())
            loss = loss_sum / max(int(count), 1)
        else:
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                # DDP averages gradients over ranks while num_items counts all ranks' tokens: undo the mean.
                loss = loss * self.accelerator.num_processes
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss


def _segment_ids(targets: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """A distinct id per sample for every position: row index, refined by packed-sample boundaries."""
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
    if position_ids is None:
        return rows
    starts = (position_ids == 0).long().cumsum(-1)
    return rows * (targets.shape[1] + 1) + starts


def _per_sample_mean_sum(per_token: torch.Tensor, targets: torch.Tensor, position_ids) -> torch.Tensor:
    """Sum over samples of each sample's mean token loss (per_token lists the supervised positions in order)."""
    segments = _segment_ids(targets, position_ids).reshape(-1)[targets.reshape(-1).ne(IGNORE_INDEX)]
    _, inverse = torch.unique(segments, return_inverse=True)
    n = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = torch.zeros(n, dtype=per_token.dtype, device=per_token.device).index_add(0, inverse, per_token)
    counts = torch.zeros(n, dtype=per_token.dtype, device=per_token.device).index_add(
        0, inverse, torch.ones_like(per_token))
    return (sums / counts).sum()


def _count_supervised_samples(batch: dict) -> int:
    labels = batch["labels"]
    position_ids = batch.get("position_ids") if "attention_mask" not in batch else None
    targets = shift_labels(labels, position_ids)
    segments = _segment_ids(targets, position_ids)[targets.ne(IGNORE_INDEX)]
    return int(torch.unique(segments).numel())
