"""The fence around transformers.Trainer: every method lmforge overrides, and the private members it uses.

lmforge subclasses `transformers.Trainer` once (`BaseTrainer`, with the mixins in `optimization.py`,
`checkpoint.py` and `preference.py`, and the stage trainers one level below). Documented hooks are a
contract; private ones (`_name`) can change in any release. Each entry records the signature the override
was written against (parameter names, kinds and defaults; annotations left out), and
tests/train/test_hf_hooks.py fails, naming the hook and both signatures, when the installed transformers
differs, or when an override is missing from this list. Nothing here is imported at run time: it is the
list a person reads before raising the transformers floor in pyproject.toml.

    from lmforge.train.hf_hooks import OVERRIDES
    OVERRIDES["_get_output_dir"].signature  # '(self, trial)'

Kinds: "documented" — listed in transformers' Trainer docs as a method to override in a subclass;
"public" — a public method, not documented as a hook; "private" — an underscore method.

Why no override here is a callback (DESIGN.md §10: observation goes in callbacks): a `TrainerCallback`
event receives args, state, control, model, optimizer, scheduler and dataloaders, never the micro-batch,
its loss or the gradient norm (transformers 5.24: `on_step_begin` is called once per optimizer step with
none of them, and `on_log` runs after the log is appended to `state.log_history`, so a callback cannot
add keys there). The overrides below either change what transformers does, or observe one of those
three; the one pure observer, `training_step`'s `batch_observers` call (ThroughputCallback.observe_batch,
the non-pad tokens of every micro-batch), keeps its one line in `BaseTrainer.training_step`. The sharding
report, which needs only the model, is a callback (`callbacks/sharding.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["documented", "public", "private"]


@dataclass(frozen=True)
class Hook:
    """One transformers.Trainer method that lmforge overrides."""

    signature: str
    """`inspect.signature` of `transformers.Trainer.<name>` without annotations, as written against (5.24)."""
    kind: Kind
    where: tuple[str, ...]
    """The lmforge classes that override it (`module:Class`)."""
    why: str


OVERRIDES: dict[str, Hook] = {
    # -- documented hooks ----------------------------------------------------------------------------------
    "compute_loss": Hook(
        "(self, model, inputs, return_outputs=False, num_items_in_batch=None)",
        "documented",
        ("lmforge.train.trainer:BaseTrainer", "lmforge.train.stages.dpo:DPOTrainer",
         "lmforge.train.stages.kto:KTOTrainer", "lmforge.train.stages.rm:RewardTrainer",
         "lmforge.train.stages.grpo:GRPOTrainer", "lmforge.train.stages.ppo:PPOTrainer"),
        "the chunked-vocabulary token loss divided by num_items_in_batch (DESIGN.md §7); each stage's loss",
    ),
    "training_step": Hook(
        "(self, model, inputs, num_items_in_batch=None)",
        "documented",
        ("lmforge.train.trainer:BaseTrainer", "lmforge.train.optimization:OptimizationMixin",
         "lmforge.train.stages.grpo:GRPOTrainer"),
        "BaseTrainer: hands every micro-batch to the batch observers (no callback event receives the batch). "
        "OptimizationMixin: remembers the batch whose loss was non-finite, to name it when the step stops. "
        "GRPOTrainer: times forward + backward apart from the rollouts (time/train_s)",
    ),
    "get_train_dataloader": Hook(
        "(self)",
        "documented",
        ("lmforge.train.trainer:BaseTrainer",),
        "max_tokens_per_batch: batches by a token budget (TokenBudgetBatchSampler) instead of a row count",
    ),
    "create_optimizer": Hook(
        "(self, model=None)",
        "documented",
        ("lmforge.train.trainer:BaseTrainer", "lmforge.train.optimizers:CustomOptimizerMixin"),
        "BaseTrainer: LoRA+'s param groups (`param_groups`); CustomOptimizerMixin: GaLore, APOLLO, BAdam, Adam-mini "
        "or Muon in place of `optim` (use_* keys); both set self.optimizer and leave the rest to transformers",
    ),
    "create_scheduler": Hook(
        "(self, num_training_steps, optimizer=None)",
        "documented",
        ("lmforge.train.optimization:OptimizationMixin",),
        "warmup_stable_decay: num_decay_steps from decay_ratio, computed here and never written into args",
    ),
    "log": Hook(
        "(self, logs, start_time=None)",
        "documented",
        ("lmforge.train.optimization:OptimizationMixin", "lmforge.train.preference:PreferenceMixin"),
        "adds perplexity, grad_clip_rate, skipped_steps and the preference metrics to the log itself: "
        "`on_log` callbacks run after transformers has stored the log in state.log_history",
    ),
    "prediction_step": Hook(
        "(self, model, inputs, prediction_loss_only, ignore_keys=None)",
        "documented",
        ("lmforge.train.preference:PreferenceMixin",),
        "preference evaluation returns the loss alone (the stage's metrics go through MetricStore)",
    ),
    # -- public, not documented as hooks -------------------------------------------------------------------
    "train": Hook(
        "(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None)",
        "public",
        ("lmforge.train.checkpoint:AtomicCheckpointMixin",),
        "refuses a damaged checkpoint with a user-facing message before transformers half-loads it",
    ),
    "evaluation_loop": Hook(
        "(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix='eval')",
        "public",
        ("lmforge.train.preference:PreferenceMixin",),
        "puts the preference metrics into the evaluation's metrics, so evaluate() returns them too",
    ),
    "get_decay_parameter_names": Hook(
        "(self, model)",
        "public",
        ("lmforge.train.optimization:OptimizationMixin",),
        "weight decay on matrix weights only, embeddings only with weight_decay_embeddings",
    ),
    "create_accelerator_and_postprocess": Hook(
        "(self)",
        "public",
        ("lmforge.train.trainer:BaseTrainer",),
        "FSDP on CPU processes: gives accelerate back the FSDP plugin it drops for multi-CPU runs",
    ),
    # -- private -------------------------------------------------------------------------------------------
    "_prepare_inputs": Hook(
        "(self, inputs)",
        "private",
        ("lmforge.train.trainer:BaseTrainer",),
        "drops the `_`-prefixed batch keys (for observers, e.g. `_token_mask`, `_source`) before the model",
    ),
    "_get_train_sampler": Hook(
        "(self, train_dataset=None)",
        "private",
        ("lmforge.train.trainer:BaseTrainer", "lmforge.train.stages.grpo:GRPOTrainer",
         "lmforge.train.stages.ppo:PPOTrainer"),
        "memmap corpora: the seeded per-epoch permutation that makes resume exact (DESIGN.md §9); grpo: each prompt "
        "num_generations times, each step's prompts num_iterations times (GroupRepeatSampler); ppo: each rollout batch "
        "ppo_epochs times, each pass shuffled (PPORolloutSampler)",
    ),
    "_get_num_items_in_batch": Hook(
        "(self, batch_samples, device)",
        "private",
        ("lmforge.train.trainer:BaseTrainer", "lmforge.train.stages.grpo:GRPOTrainer",
         "lmforge.train.stages.ppo:PPOTrainer"),
        "loss_weighting: sample counts samples, not tokens, across micro-batches and ranks; grpo: the one hook that "
        "sees every micro-batch of a step before its first forward, so the step's rollouts happen there and it "
        "returns their completion tokens (DAPO's normaliser); ppo: samples and scores the rollout batch at its first "
        "step and gives each micro-batch its rows",
    ),
    "_finalize_training": Hook(
        "(self, trial, num_train_samples, start_time)",
        "private",
        ("lmforge.train.trainer:BaseTrainer",),
        "gathers the unlogged loss remainder across ranks, so train_loss is the same at any world size",
    ),
    "_save_checkpoint": Hook(
        "(self, model, trial)",
        "private",
        ("lmforge.train.checkpoint:AtomicCheckpointMixin",),
        "atomic checkpoints: written into .staging/, renamed when complete, rotated only after the rename",
    ),
    "_get_output_dir": Hook(
        "(self, trial)",
        "private",
        ("lmforge.train.checkpoint:AtomicCheckpointMixin",),
        "the directory transformers' _save_checkpoint writes checkpoint-N into: the staging directory while "
        "AtomicCheckpointMixin saves (this override replaced a lambda assigned on the instance)",
    ),
    "_clip_grad_norm": Hook(
        "(self, model)",
        "private",
        ("lmforge.train.optimization:OptimizationMixin",),
        "warmup_max_grad_norm during warm-up, and the clipped-step count behind grad_clip_rate",
    ),
    "_get_grad_norm": Hook(
        "(self, model, grad_norm=None)",
        "private",
        ("lmforge.train.optimization:OptimizationMixin",),
        "a non-finite loss or gradient norm stops the run (or skips the update) before the optimizer step",
    ),
    "_save": Hook(
        "(self, output_dir=None, state_dict=None)",
        "private",
        ("lmforge.train.stages.rm:ValueHeadCheckpoints", "lmforge.train.stages.ppo:PPOTrainer"),
        "the value-head model saves through its own save_pretrained; ppo adds its KL coefficient and score moments",
    ),
    "_load_from_checkpoint": Hook(
        "(self, resume_from_checkpoint, model=None)",
        "private",
        ("lmforge.train.stages.rm:ValueHeadCheckpoints", "lmforge.train.stages.ppo:PPOTrainer"),
        "the value-head model loads its trained weights itself on resume; ppo its KL coefficient and score moments",
    ),
}


@dataclass(frozen=True)
class PrivateUse:
    """A private transformers.Trainer member lmforge calls, reads or writes without overriding it."""

    kind: Literal["method", "attribute"]
    signature: str | None
    """For a method, as in `Hook.signature`."""
    where: str
    why: str


PRIVATE_USES: dict[str, PrivateUse] = {
    "_remove_unused_columns": PrivateUse(
        "method", "(self, dataset, description=None)", "BaseTrainer.get_train_dataloader",
        "the same column filtering as transformers' own train dataloader",
    ),
    "_has_mixed_mesh_grads": PrivateUse(
        "method", "(self, model)", "OptimizationMixin._clip_grad_norm_to",
        "mirrors transformers' _clip_grad_norm dispatch for the warm-up limit",
    ),
    "_mixed_mesh_grad_norm": PrivateUse(
        "method", "(self, model, max_norm)", "OptimizationMixin._clip_grad_norm_to",
        "mirrors transformers' _clip_grad_norm dispatch for the warm-up limit",
    ),
    "_tr_loss": PrivateUse(
        "attribute", None, "BaseTrainer._finalize_training",
        "the loss summed since the last log, gathered across ranks before transformers averages it",
    ),
    "_created_lr_scheduler": PrivateUse(
        "attribute", None, "OptimizationMixin.create_scheduler",
        "marks the warmup_stable_decay scheduler as the Trainer's own, as transformers' create_scheduler does, "
        "so a later train() call builds a fresh one",
    ),
    "model_accepts_loss_kwargs": PrivateUse(
        "attribute", None, "PreferenceMixin.__init__",
        "false: transformers divides the preference losses (micro-batch means) by the accumulation steps",
    ),
    "is_fsdp_enabled": PrivateUse(
        "attribute", None, "BaseTrainer.create_accelerator_and_postprocess",
        "set with the FSDP plugin handed back to accelerate on CPU processes",
    ),
}

# What lmforge relies on inside transformers' own bodies, beyond their signatures.
CALLS_REQUIRED: dict[str, frozenset[str]] = {
    # AtomicCheckpointMixin redirects the save through _get_output_dir; without this call checkpoints
    # would be written in place, non-atomically.
    "_save_checkpoint": frozenset({"_get_output_dir", "save_model", "save_to_json", "rotate_checkpoints"}),
}
CALLS_MIRRORED: dict[str, frozenset[str]] = {
    # OptimizationMixin._clip_grad_norm_to repeats this dispatch with the warm-up limit: a new call upstream
    # is a path the warm-up clip would miss.
    "_clip_grad_norm": frozenset(
        {"is_sagemaker_mp_enabled", "clip_master_grads", "_has_mixed_mesh_grads", "_mixed_mesh_grad_norm",
         "clip_grad_norm_", "parameters"}
    ),
}
