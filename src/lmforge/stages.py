"""Training stages, each declared once as a `Stage` spec: what it reads, how it batches, what it logs.

    from lmforge.stages import STAGES
    spec = STAGES.get("dpo")          # unknown names raise a ConfigError with a did-you-mean
    spec.data_kind, spec.can_pack     # "pairwise", False
    spec.resolve_run()(cfg)           # run_dpo, imported on use

Every place that used to test a stage name (config rules, the data pipeline, `lmforge data`, the trainer's
plots and perplexity) reads a field of the spec instead, so a new stage is one `STAGES.add(...)` plus its
run function: nothing else changes.

Why the specs live here, at the bottom layer, and not in `train/stages/<name>.py`: `config/validate.py` and
`data/` read them, and neither may import `lmforge.train` (it loads torch, and imports point down). So this
module holds pure data and names each built-in run function as a "module:function" string, imported only
when the stage runs. A stage defined elsewhere (a test, a plugin) may pass its run function itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.registry import Registry


@dataclass(frozen=True)
class Stage:
    name: str
    """The value of the `stage` key."""
    run: Callable[[Any], Any] | str
    """`run_<stage>(cfg)`, or "module:function" naming it (resolved on use, so specs never import torch)."""
    data_kind: str
    """What its data is, which picks how records load and tokenize: a key of `lmforge.data.processors.PROCESSORS`
    (text = documents, conversation, pairwise = chosen/rejected, feedback = a response and a kto_tag)."""
    collator: str
    """The collator (`lmforge.data.collators.COLLATORS`) that batches its tokenized rows."""
    summary: str = ""
    """One line for help texts: what the stage trains."""
    can_pack: bool = False
    """`packing` is allowed: rows are single sequences that may be concatenated."""
    packs_by_default: bool = False
    """With `packing` unset, rows are packed (pt: documents are one token stream)."""
    isolates_packed: bool = False
    """`neat_packing` applies: packed samples can be kept from attending to each other."""
    reads_memmap: bool = False
    """`memmap_path`/`eval_memmap_path`/`isolate_documents` apply (token shards from `lmforge tokenize`)."""
    uses_reference: bool = False
    """A frozen reference model may score its samples: `ref_model`/`precompute_ref_log_probs` apply."""
    token_loss: bool = False
    """Its loss is a cross-entropy over supervised tokens of single sequences: exp(loss) is logged as
    perplexity, and `loss_weighting`, `group_by_length` and `max_tokens_per_batch` apply."""
    plotted: tuple[str, ...] = ()
    """Logged metrics besides the loss that `plot_loss` draws."""
    predicts: bool = False
    """`do_predict` (generate answers, score them against references) applies."""
    samples_rollouts: bool = False
    """Online RL: it samples completions of its prompts while training, so the `rl` group's keys apply."""
    completion_length_key: str | None = None
    """Online RL: the config key (rl or generation group) giving the most tokens generated per completion (grpo
    `max_completion_length`, ppo `max_new_tokens`); the planner sizes the rollout KV cache and the training rows
    (prompt + completion) with it."""
    reference_weight_key: str | None = None
    """Online RL: the config key weighting the KL to a frozen reference model, whose value 0 means no reference
    model is kept at all (grpo `beta`)."""
    always_reference: bool = False
    """Online RL: a frozen reference model is always kept while it trains (ppo's KL penalty), whatever the keys."""
    scores_with_reward_model: bool = False
    """A separate reward model (the `reward_model` key) scores its rollouts (ppo)."""
    value_head: bool = False
    """A value head (hidden -> 1 linear) trains beside the policy (ppo)."""

    def resolve_run(self) -> Callable[[Any], Any]:
        """The run function, imported now if the spec names it by "module:function"."""
        if callable(self.run):
            return self.run
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


STAGES: Registry[Stage] = Registry("stage")


def stages_with(**fields: Any) -> list[str]:
    """Names of the registered stages whose spec has every given field value, e.g. stages_with(can_pack=True)."""
    return [name for name in STAGES.names() if all(getattr(STAGES.get(name), k) == v for k, v in fields.items())]


def _builtin(spec: Stage) -> None:
    STAGES.add(spec.name, spec)


_builtin(Stage(
    "pt", "lmforge.train.stages.pt:run_pt", data_kind="text", collator="text",
    summary="(continued) pretraining on raw documents",
    can_pack=True, packs_by_default=True, reads_memmap=True, token_loss=True,
))
_builtin(Stage(
    "sft", "lmforge.train.stages.sft:run_sft", data_kind="conversation", collator="conversation",
    summary="supervised fine-tuning on the assistant turns of conversations",
    can_pack=True, isolates_packed=True, token_loss=True, predicts=True,
))
_builtin(Stage(
    "rm", "lmforge.train.stages.rm:run_rm", data_kind="pairwise", collator="pairwise",
    summary="reward modelling on chosen/rejected pairs", plotted=("accuracy",),
))
_builtin(Stage(
    "dpo", "lmforge.train.stages.dpo:run_dpo", data_kind="pairwise", collator="pairwise",
    summary="direct preference optimisation on chosen/rejected pairs", uses_reference=True,
    plotted=("rewards/accuracies", "rewards/margins"),
))
_builtin(Stage(
    "kto", "lmforge.train.stages.kto:run_kto", data_kind="feedback", collator="feedback",
    summary="Kahneman-Tversky optimisation on responses marked desirable or not", uses_reference=True,
    plotted=("rewards/margins", "kl"),
))
_builtin(Stage(
    "grpo", "lmforge.train.stages.grpo:run_grpo", data_kind="prompt", collator="prompt",
    summary="online RL with verifiable rewards: GRPO, Dr. GRPO, DAPO, GSPO", plotted=("reward", "kl"),
    samples_rollouts=True, completion_length_key="max_completion_length", reference_weight_key="beta",
))
_builtin(Stage(
    "ppo", "lmforge.train.stages.ppo:run_ppo", data_kind="prompt", collator="prompt",
    summary="online RL against a reward model trained by stage rm (PPO with a value head)", plotted=("reward", "kl"),
    samples_rollouts=True, completion_length_key="max_new_tokens", always_reference=True,
    scores_with_reward_model=True, value_head=True,
))
