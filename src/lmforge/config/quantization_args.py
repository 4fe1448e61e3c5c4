"""QLoRA: the base model loaded in 4 or 8 bits through bitsandbytes, LoRA trained on top (LLaMA-Factory's keys).

    finetuning_type: lora
    quantization_bit: 4            # 4 (nf4 / fp4) or 8 (LLM.int8)
    quantization_type: nf4
    double_quantization: true      # quantize the 4-bit blocks' scales too (~0.37 bit per parameter less)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

QuantizationMethod = Literal["bnb", "hqq", "eetq"]


@dataclass(frozen=True)
class QuantizationArguments:
    quantization_bit: Literal[4, 8] | None = field(
        default=None,
        metadata={"help": "Load the base model in 4 or 8 bits (bitsandbytes) and train LoRA on it (QLoRA); "
                  "needs finetuning_type: lora and `pip install bitsandbytes`."},
    )
    quantization_method: QuantizationMethod = field(
        default="bnb", metadata={"help": "bnb (bitsandbytes). LLaMA-Factory's hqq and eetq are not supported."}
    )
    quantization_type: Literal["nf4", "fp4"] = field(
        default="nf4", metadata={"help": "4-bit data type: nf4 (normal float, QLoRA's) or fp4."}
    )
    double_quantization: bool = field(
        default=True, metadata={"help": "4-bit: quantize the block scales as well (QLoRA's double quantization)."}
    )
    quantization_device_map: Literal["auto"] | None = field(
        default=None,
        metadata={"help": "auto: spread a 4-bit model over the visible devices for inference (not for training)."},
    )

    @property
    def enabled(self) -> bool:
        return self.quantization_bit is not None
