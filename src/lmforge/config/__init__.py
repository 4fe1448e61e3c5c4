"""Typed configuration: one flat LLaMA-Factory-style dict routed into small argument groups."""

from lmforge.config.data_args import DataArguments
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.generation_args import GenerationArguments
from lmforge.config.export_args import ExportArguments
from lmforge.config.loader import InferenceConfig, RunConfig, load_config, load_inference_config
from lmforge.config.model_args import ModelArguments
from lmforge.config.training_args import TrainingArguments

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
