"""End to end: GRPO with an exact-match reward raises the demo task's held-out accuracy from a weak SFT checkpoint.

Recipe (seed 0): the demo's pretrained model (the `demo_result` session fixture, which the demo test also checks), then the demo's SFT stopped at 4 epochs
instead of 8 (cosine schedule over 4 epochs; no in-loop evaluator, no validation split): ~40% held-out greedy exact
match. Then GRPO from that checkpoint: full fine-tuning, built-in `accuracy` reward (exact match against the
response), num_generations 16, 128 completions per step (8 prompts), temperature 0.5, loss_type grpo, beta 0,
constant learning rate 6e-5, 120 steps. Measured at seed 0: 40% -> 65% held-out greedy exact match; from the same
checkpoint, GRPO at seeds 1 and 2 (other sampling streams) reached 65% and 69%. 80 steps were not enough to be
robust: 67% with one sampling stream, 52% with another.

Caveat: the SFT trajectory is chaotic around epochs 3-5 (3 epochs: 0%, 5 epochs: 0%), so the starting accuracy can
move with numerics (thread count, torch version); the test prints both figures and the phase timings (`pytest -s`).
"""

from __future__ import annotations

import time

import pytest
import yaml

from lmforge.cli import main
from lmforge.demo import demo_configs, standalone_accuracy

SEED = 0
SFT_EPOCHS = 4  # the demo runs 8; 4 leaves a weak checkpoint (~40% at seed 0)
GRPO = {
    "stage": "grpo",
    "finetuning_type": "full",
    "template": "qwen",
    "default_system": "You shift letters.",
    "dataset": "shift_sft",
    "cutoff_len": 64,
    "reward_funcs": ["accuracy"],
    "num_generations": 16,
    "per_device_train_batch_size": 128,  # completions: 8 prompts x 16
    "max_completion_length": 12,
    "temperature": 0.5,
    "loss_type": "grpo",
    "beta": 0.0,
    "learning_rate": 6.0e-5,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "max_steps": 120,
    "logging_steps": 10,
    "save_strategy": "no",
    "overwrite_output_dir": True,
    "disable_tqdm": True,
}


def _train(path, cfg: dict) -> float:
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}), encoding="utf-8")
    started = time.perf_counter()
    assert main(["train", str(path)]) in (0, None)
    return time.perf_counter() - started


@pytest.mark.slow
def test_grpo_exact_match_raises_heldout_accuracy(tmp_path, demo_result):
    timings = {}
    data = demo_result.pt_dir.parent / "data"  # the demo's data, written with seed 0
    _, sft = demo_configs(tmp_path, demo_result.pt_dir.parent / "base", data, SEED)
    sft.update(model_name_or_path=str(demo_result.pt_dir), num_train_epochs=SFT_EPOCHS, eval_tasks=None,
               eval_on_start=False, val_size=0, eval_strategy="no", plot_loss=False, output_dir=str(tmp_path / "sft"))
    timings["sft"] = _train(tmp_path / "sft.yaml", sft)

    started = time.perf_counter()
    before = standalone_accuracy(tmp_path / "sft", data, tmp_path / "eval_sft")
    timings["eval_before"] = time.perf_counter() - started

    grpo = {**GRPO, "model_name_or_path": str(tmp_path / "sft"), "dataset_dir": str(data), "seed": SEED,
            "output_dir": str(tmp_path / "grpo"), "data_cache_dir": str(tmp_path / "cache")}
    timings["grpo"] = _train(tmp_path / "grpo.yaml", grpo)

    started = time.perf_counter()
    after = standalone_accuracy(tmp_path / "grpo", data, tmp_path / "eval_grpo")
    timings["eval_after"] = time.perf_counter() - started

    print(f"\nheld-out exact match: SFT ({SFT_EPOCHS} epochs) {before:.0%} -> GRPO {after:.0%} "
          f"({after - before:+.0%})")
    print("seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))
    assert after - before >= 0.20, f"GRPO moved held-out exact match {before:.0%} -> {after:.0%}, wanted >= +20 points"
