"""Preference optimisation (rm, dpo, kto): LLaMA-Factory's pref_* / dpo_* / kto_* keys and the reference model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

PrefLoss = Literal["sigmoid", "hinge", "ipo", "orpo", "simpo"]
PREF_LOSSES: tuple[str, ...] = get_args(PrefLoss)
"""The `pref_loss` values (train/preference_losses.py implements each)."""


@dataclass(frozen=True)
class PreferenceArguments:
    pref_beta: float = field(default=0.1, metadata={"help": "dpo/kto: beta, the strength of the reference constraint."})
    pref_ftx: float = field(default=0.0, metadata={"help": "dpo: weight of an SFT term (mean chosen-token NLL)."})
    pref_loss: PrefLoss = field(default="sigmoid", metadata={"help": "dpo: sigmoid (DPO), hinge, ipo, orpo or simpo."})
    dpo_label_smoothing: float = field(
        default=0.0, metadata={"help": "dpo sigmoid: robust DPO's label smoothing, in [0, 0.5)."}
    )
    simpo_gamma: float = field(default=0.5, metadata={"help": "simpo: the target reward margin gamma."})
    kto_chosen_weight: float = field(default=1.0, metadata={"help": "kto: weight of desirable samples."})
    kto_rejected_weight: float = field(default=1.0, metadata={"help": "kto: weight of undesirable samples."})
    ref_model: str | None = field(
        default=None,
        metadata={"help": "dpo/kto: reference model directory. Default: the model as loaded (with LoRA the "
                  "adapter is switched off, no copy; full/freeze keep a frozen copy)."},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "dpo/kto: score the data with the reference once before training, then free it."},
    )
