"""QLoRA's quantized base: `from_pretrained` arguments for a 4- or 8-bit bitsandbytes model, and its weights
dequantized again for a merge.

    kwargs = quantized_load_kwargs(cfg.adapter.quantization, compute_dtype=torch.bfloat16, is_trainable=True)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)       # Linear4bit / Linear8bitLt layers
    dequantize_linears(model)                                          # back to nn.Linear, weights as trained on

bitsandbytes quantizes every nn.Linear except the output head (transformers keeps `lm_head` in full precision);
embeddings and norms stay as loaded. On CPU its 0.50 backend runs both 4-bit (nf4 / fp4, double quantization)
and 8-bit layers, forward and backward; the 8-bit layers compute in fp16 there.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config.quantization_args import QuantizationArguments
from lmforge.errors import ConfigError
from lmforge.logging import get_logger

logger = get_logger(__name__)


def require_bitsandbytes() -> None:
    """A ConfigError naming the key and the install command when bitsandbytes is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("quantization_bit: needs bitsandbytes; install it with `pip install bitsandbytes` "
                          "(or `pip install -e '.[bitsandbytes]'`), or remove quantization_bit") from None


def quantized_load_kwargs(quant: QuantizationArguments, compute_dtype: torch.dtype, *, is_trainable: bool,
                          device: str | None = None) -> dict:
    """`quantization_config` and `device_map` for `from_pretrained` (LLaMA-Factory's choices: the 4-bit blocks
    computed and stored in `compute_dtype`; one device per process for training, `auto` only for inference)."""
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    if quant.quantization_bit == 4:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=quant.double_quantization,
            bnb_4bit_quant_type=quant.quantization_type,
            bnb_4bit_quant_storage=compute_dtype,  # FSDP shards the 4-bit storage only in the compute dtype
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    if quant.quantization_device_map == "auto" and not is_trainable:
        device_map: str | dict = "auto"
    else:
        device_map = {"": device or _current_device()}
    return {"quantization_config": config, "device_map": device_map}


def _current_device() -> str:
    if torch.cuda.is_available():
        import os

        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def dequantize_linears(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace every bitsandbytes Linear4bit / Linear8bitLt by an nn.Linear holding its dequantized weight (the
    weights a QLoRA adapter was trained against); returns how many were replaced."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = F.dequantize_4bit(child.weight.data, child.weight.quant_state)
            elif isinstance(child, bnb.nn.Linear8bitLt):
                state = child.state
                cb = child.weight.data if child.weight.data.dtype == torch.int8 else state.CB
                scb = getattr(child.weight, "SCB", None)
                scb = scb if scb is not None else state.SCB
                weight = cb.float() * scb.float().unsqueeze(1) / 127.0
            else:
                continue
            linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                               device=weight.device, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(weight.to(dtype))
                if child.bias is not None:
                    linear.bias.copy_(child.bias.data.to(dtype))
            setattr(module, child_name, linear)
            replaced += 1
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    for attr in ("quantization_method", "hf_quantizer"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return replaced

