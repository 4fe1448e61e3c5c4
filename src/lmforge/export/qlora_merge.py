"""`lmforge export` of a QLoRA run: the adapter merged into the base it was trained against.

    model = load_dequantized_merged(cfg.model, cfg.adapter)     # export config with quantization_bit
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.logging import get_logger

logger = get_logger(__name__)


def load_dequantized_merged(model_args, adapter) -> nn.Module:
    """The base quantized as the QLoRA run quantized it, dequantized back to `model_args.torch_dtype` linears,
    with the adapters of `model_args.adapter_name_or_path` merged: the weights the adapter was trained against
    plus B @ A, so the merged model computes what the QLoRA model computed. (LLaMA-Factory refuses an export
    config with quantization_bit and merges into the original full-precision weights instead, which the adapter
    never saw; lmforge does that too when the export config has no quantization_bit.)"""
    from dataclasses import replace

    from lmforge.config.quantization_args import QuantizationArguments
    from lmforge.model.adapters.lora import apply_lora
    from lmforge.model.adapters.targets import split_names
    from lmforge.model.loader import DTYPES, load_model
    from lmforge.model.quantization import dequantize_linears

    base = load_model(replace(model_args, adapter_name_or_path=None), replace(adapter, finetuning_type="full"),
                      is_trainable=False)
    dtype = DTYPES.get(model_args.torch_dtype, torch.float32)
    replaced = dequantize_linears(base, dtype)
    logger.info("dequantized %d %d-bit linear layers of the base to %s before merging", replaced,
                adapter.quantization.quantization_bit, str(dtype).removeprefix("torch."))
    merged = apply_lora(base, replace(adapter, quantization=QuantizationArguments()), is_trainable=False,
                        adapter_paths=split_names(model_args.adapter_name_or_path))
    merged.requires_grad_(False)
    return merged.eval()
