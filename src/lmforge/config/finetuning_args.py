"""What to train (stage) and which parameters (full, freeze, lora)."""

from __future__ import annotations

from dataclasses import dataclass, field

PREF_LOSSES = ("sigmoid", "hinge", "ipo", "orpo", "simpo")
"""The `pref_loss` values (train/preference_losses.py implements each)."""


@dataclass(frozen=True)
class FinetuningArguments:
    stage: str = field(default="sft", metadata={"help": "Training stage: pt, sft, rm, dpo, kto."})
    finetuning_type: str = field(default="lora", metadata={"help": "Which parameters train: full, freeze or lora."})
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "freeze: train the last N layers (positive) or the first N (negative)."},
    )
    freeze_trainable_modules: str = field(
        default="all",
        metadata={"help": "freeze: comma-separated module names inside the trainable layers (e.g. mlp,self_attn), or all."},
    )
    freeze_extra_modules: str | None = field(
        default=None, metadata={"help": "freeze: extra modules outside the layers to train (e.g. embed_tokens,norm)."}
    )
    lora_rank: int = field(default=8, metadata={"help": "lora: rank r of the update matrices."})
    lora_alpha: int | None = field(default=None, metadata={"help": "lora: scaling alpha (default 2 * lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "lora: dropout on the adapter input."})
    lora_target: str = field(
        default="all", metadata={"help": "lora: comma-separated linear module names, or all (every linear but the head)."}
    )
    additional_target: str | None = field(
        default=None, metadata={"help": "lora: comma-separated modules trained in full beside the adapters (e.g. embed_tokens)."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "lora: rank-stabilised scaling alpha / sqrt(r)."})
    use_dora: bool = field(default=False, metadata={"help": "lora: weight-decomposed LoRA (DoRA)."})
    create_new_adapter: bool = field(
        default=False, metadata={"help": "lora: start a new adapter on top of adapter_name_or_path instead of continuing it."}
    )
    loss_weighting: str = field(
        default="token",
        metadata={"help": "token: mean over all supervised tokens of the optimizer step (long samples weigh more); "
                  "sample: every sample's mean token loss weighs the same."},
    )
    loss_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per chunk of the vocabulary projection in the loss; full logits are never "
                  "materialised. Default: 1024 on accelerators, on CPU as many as keep a chunk's fp32 logits "
                  "under 32 MiB (256 to 1024). 0 = let the model compute its own loss."},
    )
    plot_loss: bool = field(
        default=False,
        metadata={"help": "Write training_loss.png / eval_loss.png (and the reward accuracy of rm, dpo and kto) "
                  "to output_dir."},
    )
    # -- preference optimisation (dpo, kto); LLaMA-Factory's keys -------------------------------------------
    pref_beta: float = field(default=0.1, metadata={"help": "dpo/kto: beta, the strength of the reference constraint."})
    pref_ftx: float = field(default=0.0, metadata={"help": "dpo: weight of an SFT term (mean chosen-token NLL)."})
    pref_loss: str = field(default="sigmoid", metadata={"help": "dpo: sigmoid (DPO), hinge, ipo, orpo or simpo."})
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

    @property
    def lora_alpha_value(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank
