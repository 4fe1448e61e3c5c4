"""Memory-saving optimizers in place of AdamW: LLaMA-Factory's use_galore / use_apollo / use_badam /
use_adam_mini / use_muon keys, with its names and defaults (hparams/finetuning_args.py, 0.9.6).

    use_galore: true
    galore_rank: 16
    galore_target: all        # every nn.Linear but the output head, or comma-separated module names

At most one is set (config/validate.py); the optimizers themselves are built in train/optimizers.py. The
`optim` key (transformers' TrainingArguments) still names the base optimizer: GaLore runs as GaLoreAdamW
(adamw_torch), GaLoreAdamW8bit (adamw_8bit) or GaLoreAdafactor (adafactor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class OptimizerArguments:
    # -- GaLore (Zhao et al. 2024): Adam states of low-rank projected gradients --------------------------
    use_galore: bool = field(
        default=False,
        metadata={"help": "GaLore: Adam on low-rank projections of the matrix gradients (pip install galore-torch)."},
    )
    galore_target: str = field(
        default="all",
        metadata={"help": "Comma-separated module names whose linear weights GaLore projects, or all (every linear "
                  "but the output head)."},
    )
    galore_rank: int = field(default=16, metadata={"help": "Rank of the GaLore gradient projection."})
    galore_update_interval: int = field(
        default=200, metadata={"help": "Steps between recomputations of the GaLore projection (an SVD)."}
    )
    galore_scale: float = field(default=2.0, metadata={"help": "GaLore scale of the projected-back update."})
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = field(
        default="std", metadata={"help": "Which side GaLore projects: std, reverse_std, right, left or full."}
    )
    galore_layerwise: bool = field(
        default=False,
        metadata={"help": "Step each parameter during backward and free its gradient (needs "
                  "gradient_accumulation_steps 1, one process; the logged grad_norm is 0)."},
    )
    # -- APOLLO (Zhu et al. 2024): AdamW with channel-wise scaling from a random low-rank space ---------
    use_apollo: bool = field(
        default=False, metadata={"help": "APOLLO optimizer (pip install apollo-torch)."}
    )
    apollo_target: str = field(
        default="all",
        metadata={"help": "Comma-separated module names whose linear weights APOLLO handles, or all."},
    )
    apollo_rank: int = field(default=16, metadata={"help": "Rank of the APOLLO auxiliary space."})
    apollo_update_interval: int = field(
        default=200, metadata={"help": "Steps between redraws of the APOLLO projection."}
    )
    apollo_scale: float = field(default=32.0, metadata={"help": "APOLLO scaling coefficient."})
    apollo_proj: Literal["svd", "random"] = field(
        default="random", metadata={"help": "APOLLO projection: random (default) or svd."}
    )
    apollo_proj_type: Literal["std", "right", "left"] = field(
        default="std", metadata={"help": "Which side APOLLO projects: std, right or left."}
    )
    apollo_scale_type: Literal["channel", "tensor"] = field(
        default="channel", metadata={"help": "APOLLO gradient scaling per channel or per tensor (APOLLO-Mini)."}
    )
    apollo_layerwise: bool = field(
        default=False,
        metadata={"help": "Step each parameter during backward (needs gradient_accumulation_steps 1, one process)."},
    )
    apollo_scale_front: bool = field(
        default=False, metadata={"help": "Apply APOLLO's norm-growth limiter before the gradient scaling."}
    )
    # -- BAdam (Luo et al. 2024): block coordinate descent, Adam on one block at a time ------------------
    use_badam: bool = field(
        default=False, metadata={"help": "BAdam: Adam on one block of parameters at a time (pip install badam)."}
    )
    badam_mode: Literal["layer", "ratio"] = field(
        default="layer",
        metadata={"help": "layer: one decoder layer at a time; ratio: a share (badam_update_ratio) of every matrix, "
                  "its sparse gradients clipped by a sparse-aware norm."},
    )
    badam_start_block: int | None = field(
        default=None, metadata={"help": "Index of the first block trained (default: by badam_switch_mode)."}
    )
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] | None = field(
        default="ascending", metadata={"help": "Order of the blocks: ascending, descending, random or fixed."}
    )
    badam_switch_interval: int | None = field(
        default=50, metadata={"help": "Optimizer steps per block before switching; -1 never switches."}
    )
    badam_update_ratio: float = field(
        default=0.05, metadata={"help": "badam_mode ratio: the share of each matrix updated."}
    )
    badam_mask_mode: Literal["adjacent", "scatter"] = field(
        default="adjacent",
        metadata={"help": "badam_mode ratio: adjacent (a contiguous slice) or scatter (random entries)."},
    )
    badam_verbose: int = field(
        default=0, metadata={"help": "BAdam's printing: 0 none, 1 the active block, 2 its parameters."}
    )
    # -- one-key optimizers ----------------------------------------------------------------------------
    use_adam_mini: bool = field(
        default=False,
        metadata={"help": "Adam-mini: one second moment per block (head / neuron) instead of per weight "
                  "(pip install adam-mini)."},
    )
    use_muon: bool = field(
        default=False,
        metadata={"help": "Muon (torch.optim.Muon) on the 2-D hidden matrices, AdamW on embeddings, the output "
                  "head and vectors."},
    )

    @property
    def chosen(self) -> list[str]:
        """The optimizers switched on, by registry name (train/optimizers.py); validation allows one."""
        return [name for name, on in (("galore", self.use_galore), ("apollo", self.use_apollo),
                                      ("badam", self.use_badam), ("adam_mini", self.use_adam_mini),
                                      ("muon", self.use_muon)) if on]

    @property
    def name(self) -> str | None:
        return self.chosen[0] if self.chosen else None
