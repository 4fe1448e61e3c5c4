"""Runs survive SIGKILL: exact resume (bitwise-equal final weights), atomic checkpoints, non-finite stops.

Each run is a real `lmforge train` process. The child script below only slows steps down (or holds a save
open) so the test can kill it at a chosen moment; the training code is the production path.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmforge.data.memmap.writer import tokenize_corpus

CHILD = r"""
import os, sys, time
import transformers
from lmforge.cli import main

step_delay = float(os.environ.get("STEP_DELAY", "0"))
hold_save_from = int(os.environ.get("HOLD_SAVE_FROM_STEP", "0"))
poison = int(os.environ.get("NAN_ON_TOKEN", "-1"))
real_step = transformers.Trainer.training_step
real_save = transformers.Trainer._save_optimizer_and_scheduler

def slow_step(self, *args, **kwargs):
    time.sleep(step_delay)
    return real_step(self, *args, **kwargs)

def held_save(self, output_dir):
    real_save(self, output_dir)
    if hold_save_from and self.state.global_step >= hold_save_from:
        open(os.environ["HOLD_MARKER"], "w").write(output_dir)
        time.sleep(600)  # killed here: model and optimizer written, trainer state not yet

import torch
real_embed = torch.nn.Embedding.forward

def embed(self, ids):
    out = real_embed(self, ids)
    # a batch holding the poison token goes numerically wrong, as an unstable batch would
    return out * float("nan") if poison >= 0 and bool((ids == poison).any()) else out

torch.nn.Embedding.forward = embed
transformers.Trainer.training_step = slow_step
transformers.Trainer._save_optimizer_and_scheduler = held_save
sys.exit(main(["train", sys.argv[1]] + sys.argv[2:]))
"""

WORDS = "alpha beta gamma delta model token shard seed order resume kill save".split()


def write_config(path: Path, **cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config: Path, tmp_path: Path, *overrides: str, **env) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(config), *overrides],
        env={**os.environ, **{k: str(v) for k, v in env.items()}},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def run_here(config: Path, *overrides: str) -> None:
    """A run that is not killed (the reference, the resumption) in this process: a process start saved."""
    from lmforge.cli import main

    assert main(["train", str(config), *overrides]) == 0


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def logged_steps(output_dir: Path) -> list[int]:
    log = output_dir / "trainer_log.jsonl"
    if not log.exists():
        return []
    steps = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if "loss" in record:
            steps.append(record["step"] if "step" in record else record.get("current_steps"))
    return steps


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model.safetensors")


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def shards(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    with open(folder / "corpus.jsonl", "w") as f:
        for _ in range(400):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))}) + "\n")
    tokenize_corpus([str(folder / "corpus.jsonl")], tiny_model_dir, folder / "shards", workers=1, progress=False)
    return folder / "shards"


def pt_config(path: Path, model: Path, shards: Path, output_dir: Path, **extra) -> Path:
    cfg = dict(
        stage="pt", finetuning_type="full", model_name_or_path=str(model), memmap_path=str(shards),
        isolate_documents=True, cutoff_len=32, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_steps=16, learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=3, weight_decay=0.1,
        max_grad_norm=1.0, warmup_max_grad_norm=2.0, logging_steps=1, save_strategy="steps", save_steps=4,
        seed=3, dataloader_num_workers=0, output_dir=str(output_dir), report_to="none",
    )
    return write_config(path, **{**cfg, **extra})


def sft_config(path: Path, model: Path, data: Path, output_dir: Path) -> Path:
    return write_config(
        path, stage="sft", model_name_or_path=str(model), dataset="qa", dataset_dir=str(data), template="qwen",
        cutoff_len=64, finetuning_type="lora", lora_rank=4, per_device_train_batch_size=2, max_steps=12,
        learning_rate=5e-3, logging_steps=1, save_strategy="steps", save_steps=3, seed=5,
        dataloader_num_workers=0, output_dir=str(output_dir), report_to="none", num_train_epochs=3,
    )


def kill_after(proc: subprocess.Popen, output_dir: Path, first_checkpoint: int, kill_step: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed:\n{proc.stdout.read()[-3000:]}")
        steps = logged_steps(output_dir)
        if (output_dir / f"checkpoint-{first_checkpoint}").exists() and steps and max(steps) >= kill_step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    pytest.fail("timed out waiting for the run to reach the kill step")


def test_memmap_pretraining_resumes_bitwise_after_sigkill(tiny_model_dir, shards, tmp_path):
    reference = tmp_path / "reference"
    run_here(pt_config(tmp_path / "ref.yaml", tiny_model_dir, shards, reference))

    killed = tmp_path / "killed"
    config = pt_config(tmp_path / "run.yaml", tiny_model_dir, shards, killed)
    kill_step = random.Random().randint(5, 14)  # after checkpoint-4, before the end
    kill_after(start(config, tmp_path, STEP_DELAY=0.15), killed, first_checkpoint=4, kill_step=kill_step)
    assert not (killed / "model.safetensors").exists()
    run_here(config, "resume_from_checkpoint=true")

    assert_bitwise_equal(weights(killed), weights(reference))
    ref_log = [json.loads(x) for x in (reference / "trainer_log.jsonl").read_text().splitlines()]
    assert {r.get("step", r.get("current_steps")) for r in ref_log if "loss" in r} == set(range(1, 17))
    # logged each step: loss, perplexity, grad norm, clip rate, lr, throughput and MFU
    third = next(r for r in ref_log if r.get("step") == 3)  # throughput needs one step to time
    for key in ("loss", "perplexity", "grad_norm", "grad_clip_rate", "lr", "throughput/tokens_per_s",
                "throughput/mfu"):
        assert key in third, key
    assert third["perplexity"] == pytest.approx(math.exp(third["loss"]))
    # warm-up clips at warmup_max_grad_norm (2.0), later steps at max_grad_norm (1.0)
    assert all(0.0 <= r["grad_clip_rate"] <= 1.0 for r in ref_log if "grad_clip_rate" in r)


def test_sft_jsonl_resumes_bitwise_after_sigkill(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "qa.jsonl", "w") as f:
        for i in range(30):
            f.write(json.dumps({"instruction": f"Add {i} and {i % 7}", "output": f"{i + i % 7}"}) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.jsonl"}}))
    reference = tmp_path / "reference"
    run_here(sft_config(tmp_path / "ref.yaml", tiny_model_dir, data, reference))

    killed = tmp_path / "killed"
    config = sft_config(tmp_path / "run.yaml", tiny_model_dir, data, killed)
    kill_after(start(config, tmp_path, STEP_DELAY=0.15), killed, first_checkpoint=3,
               kill_step=random.Random().randint(4, 10))
    run_here(config, "resume_from_checkpoint=true")
    ref, got = load_file(reference / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert_bitwise_equal(got, ref)


def test_kill_during_save_keeps_the_previous_checkpoint(tiny_model_dir, shards, tmp_path):
    reference = tmp_path / "reference"
    run_here(pt_config(tmp_path / "ref.yaml", tiny_model_dir, shards, reference))

    run = tmp_path / "run"
    config = pt_config(tmp_path / "run.yaml", tiny_model_dir, shards, run, save_total_limit=1)
    marker = tmp_path / "saving"
    proc = start(config, tmp_path, HOLD_SAVE_FROM_STEP=8, HOLD_MARKER=marker)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.poll() else "timeout"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert marker.read_text().endswith(os.path.join(".staging", "checkpoint-8"))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4"]  # limit 1 kept the last good one
    assert (run / "checkpoint-4" / "trainer_state.json").exists()
    assert not (run / ".staging" / "checkpoint-8" / "trainer_state.json").exists()
    # a torn directory under the final name (e.g. from another tool) is skipped as well
    torn = run / "checkpoint-6"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    run_here(config, "resume_from_checkpoint=true")
    assert_bitwise_equal(weights(run), weights(reference))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-16"]
    assert not (run / ".staging").exists()  # the killed save's leftovers were replaced, then the empty folder went


def test_nonfinite_loss_stops_at_its_step_without_saving(tiny_model_dir, shards, tmp_path):
    import numpy as np

    from lmforge.data.memmap.dataset import MemmapChunks, global_order

    chunks = MemmapChunks([shards], chunk_len=32, isolate_documents=True)
    counts = np.zeros(1 << 16, dtype=np.int64)
    for i in range(len(chunks)):
        np.add.at(counts, chunks[i]["input_ids"], 1)
    poison = int(np.where(counts > 0, counts, np.iinfo(np.int64).max).argmin())  # the rarest token
    order = global_order(len(chunks), 3, 0)
    per_step = 4 * 2  # batch 4 x accumulation 2
    bad_steps = sorted({int(np.where(order == i)[0][0]) // per_step + 1
                        for i in range(len(chunks)) if poison in chunks[i]["input_ids"].tolist()})
    first_bad = bad_steps[0]
    max_steps = first_bad + 2

    output = tmp_path / "nan"
    config = pt_config(tmp_path / "nan.yaml", tiny_model_dir, shards, output, save_steps=1)
    proc = start(config, tmp_path, f"max_steps={max_steps}", NAN_ON_TOKEN=poison)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in out
    message = [line for line in out.splitlines() if line.startswith("lmforge: error:")]
    assert message and "non-finite loss at step " + str(first_bad) in message[0], out[-2000:]
    assert "shard_00000.bin[" in message[0]  # the batch's source
    saved = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    assert saved == list(range(1, first_bad))  # every good step saved, nothing from the bad one on
    assert not (output / "model.safetensors").exists()

    skipped = tmp_path / "skip"
    proc = start(config, tmp_path, f"max_steps={max_steps}", "skip_nonfinite_steps=true",
                 f"output_dir={skipped}", NAN_ON_TOKEN=poison)
    out = finish(proc)
    assert out.count("update skipped") == len([s for s in bad_steps if s <= max_steps])
    assert all(torch.isfinite(t).all() for t in weights(skipped).values())
    log = [json.loads(x) for x in (skipped / "trainer_log.jsonl").read_text().splitlines()]
    assert max(r.get("skipped_steps", 0) for r in log) >= 1


def test_grpo_resumes_bitwise_after_sigkill_sampling_included(tiny_model_dir, tmp_path):
    """Rollouts are sampled again on resume: equal weights need the same completions, so the sampling seed must be
    the run's position, not the RNG state. num_iterations 2 also reuses a rollout across steps."""
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "prompts.jsonl", "w") as f:
        for i in range(24):
            f.write(json.dumps({"instruction": f"Count to {i}", "output": f"{i}"}) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({"prompts": {"file_name": "prompts.jsonl"}}))
    (data / "rewards.py").write_text("def odd(prompts, completions, **_):\n"
                                     "    return [float(len(c) % 3) for c in completions]\n")

    def config(path: Path, output_dir: Path) -> Path:
        return write_config(
            path, stage="grpo", model_name_or_path=str(tiny_model_dir), dataset="prompts", dataset_dir=str(data),
            template="qwen", cutoff_len=64, finetuning_type="lora", lora_rank=4, per_device_train_batch_size=8,
            gradient_accumulation_steps=2, num_generations=4, max_completion_length=8, num_iterations=2, beta=0.04,
            reward_funcs=[f"{data / 'rewards.py'}:odd"], max_steps=8, learning_rate=5e-3, logging_steps=1,
            save_strategy="steps", save_steps=2, seed=5, dataloader_num_workers=0, output_dir=str(output_dir),
            report_to="none",
        )

    reference = tmp_path / "reference"
    run_here(config(tmp_path / "ref.yaml", reference))
    killed = tmp_path / "killed"
    run = config(tmp_path / "run.yaml", killed)
    kill_after(start(run, tmp_path, STEP_DELAY=0.15), killed, first_checkpoint=2,
               kill_step=random.Random().randint(3, 7))
    run_here(run, "resume_from_checkpoint=true")
    ref, got = load_file(reference / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert_bitwise_equal(got, ref)
    rewards = [r["reward"] for r in map(json.loads, (reference / "trainer_log.jsonl").read_text().splitlines())
               if "reward" in r]
    assert len(rewards) == 4 and len(set(rewards)) > 1  # a rollout every other step, and they differ
