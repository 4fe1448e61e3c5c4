"""Typed configuration: one flat LLaMA-Factory-style dict routed into small argument groups.

Importing this package is cheap: `TrainingArguments` (torch + transformers) loads on first use, so a config
error is reported in well under a second.
"""

from lmforge.config.data_args import DataArguments
from lmforge.config.export_args import ExportArguments
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.generation_args import GenerationArguments
from lmforge.config.loader import InferenceConfig, RunConfig, load_config, load_inference_config
from lmforge.config.model_args import ModelArguments

__all__ = [
    "DataArguments",
    "ExportArguments",
    "InferenceConfig",
    "FinetuningArguments",
    "GenerationArguments",
    "ModelArguments",
    "RunConfig",
    "TrainingArguments",
    "load_config",
    "load_inference_config",
]


def __getattr__(name: str):
    if name == "TrainingArguments":
        from lmforge.config.training_args import TrainingArguments

        return TrainingArguments
    raise AttributeError(f"module 'lmforge.config' has no attribute '{name}'")
