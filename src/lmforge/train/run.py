"""`lmforge train CONFIG [key=value ...]`: load the config, run its stage."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from lmforge.config.loader import load_config_and_keys
from lmforge.logging import get_logger

logger = get_logger(__name__)


def train_main(argv: list[str]) -> int:
    from lmforge.config.help import help_request, render_help

    wants_help, topic, show_all = help_request(argv)
    if wants_help:
        print(render_help(topic, show_all), end="")
        return 0
    parser = argparse.ArgumentParser(prog="lmforge train", description="Train from a YAML/JSON config.")
    parser.add_argument("config", help="YAML or JSON file of LLaMA-Factory-style keys")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    args = parser.parse_args(argv)
    # every config error is raised here, before torch loads
    cfg, keys = load_config_and_keys(args.config, args.overrides)
    import torch
    from transformers import set_seed

    from lmforge.train.host_memory import tune_malloc_for_cpu_training
    from lmforge.train.stages import get_stage
    from lmforge.train.workflow import resume_checkpoint

    from lmforge.launcher import relaunch, wants_torchrun

    if wants_torchrun(os.environ):
        return relaunch(argv)  # the config is valid: now start the workers, each of which runs this again
    if cfg.training.use_cpu or not torch.accelerator.is_available():
        tune_malloc_for_cpu_training()  # before the model and data take their memory
    if not cfg.training.do_train:
        asked = [key for key in ("do_predict", "do_eval") if getattr(cfg.training, key)]
        logger.info("%s run: nothing is trained (set 'do_train: true' to train first)",
                    "predict-only" if cfg.training.do_predict else "evaluation-only" if asked else "no-training")
    if cfg.training.do_train:
        resume_checkpoint(cfg)  # fail on a used output_dir now, not after minutes of tokenizing
    if int(os.environ.get("RANK", "0")) == 0:
        write_run_config(cfg.training.output_dir, keys)
    # Seeded before anything random happens (new adapter weights, data shuffles), not only when the Trainer
    # is built: two runs of one config, or a run and its resumed twin, start from the same weights.
    set_seed(cfg.training.seed)
    get_stage(cfg.finetuning.stage)(cfg)
    return 0


RUN_CONFIG_FILE = "lmforge_config.yaml"


def write_run_config(output_dir: str, raw: dict) -> None:
    """The keys the run was started with, beside its outputs (`lmforge compare` reads them for its config diff)."""
    path = Path(output_dir) / RUN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
