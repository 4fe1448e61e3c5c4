"""`lmforge estimate` against measured peak memory of real CPU training runs (issue 8, line 5).

    python benchmarks/estimate_vs_measured.py [--work-dir /tmp/estimate_bench] [--cases tiny-full-fp32,...]

For each case: a new model (`create_model`), a random-word corpus tokenized into memmap shards, and a
`lmforge train` run of 4 optimizer steps (stage pt, rows of exactly cutoff_len tokens) in a child process.
The child imports everything first, then resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, 5)
and reads its resident size; after training it reads the peak (`VmHWM`). Measured = peak - that baseline:
the memory training took on top of an idle interpreter with torch and transformers loaded. Predicted =
`estimate_memory(...).total` for the same model and setup (device type cpu: lmforge trains fp32 weights on
CPU, bf16 runs are autocast). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    # name: (preset, model overrides, finetuning_type, bf16, seq_len, micro_batch, gradient_checkpointing)
    "tiny-full-fp32-s256": ("small-qwen2", {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "intermediate_size": 704}, "full", False, 256, 8, False),
    "tiny-full-bf16-s1024": ("small-qwen2", {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "intermediate_size": 704}, "full", True, 1024, 8, False),
    "small-full-bf16-s512": ("small-qwen2", {}, "full", True, 512, 4, False),
    "small-lora-bf16-s1024": ("small-qwen2", {}, "lora", True, 1024, 8, False),
    "small-full-fp32-ckpt-s1024": ("small-qwen2", {}, "full", False, 1024, 8, True),
}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(config: str) -> None:
    import torch  # noqa: F401  (everything training imports, before the baseline)
    import transformers  # noqa: F401

    from lmforge.train.run import train_main
    from lmforge.train.stages import get_stage

    get_stage("pt")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _rss_kib("VmRSS")
    train_main([config])
    print(json.dumps({"baseline_kib": baseline, "peak_kib": _rss_kib("VmHWM")}))


def make_corpus(path: Path, tokens: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [f"w{rng.randrange(20000)}" for _ in range(4000)]
    with open(path, "w") as f:
        written = 0
        while written < tokens:
            doc = " ".join(rng.choice(words) for _ in range(rng.randrange(200, 2000)))
            f.write(json.dumps({"text": doc}) + "\n")
            written += len(doc.split()) * 2


def run_case(name: str, work: Path) -> dict:
    from lmforge.config.finetuning_args import FinetuningArguments
    from lmforge.model.from_config import create_model
    from lmforge.planner.memory import Setup, estimate_memory
    from lmforge.planner.shape import load_shape
    from lmforge.train.losses import default_chunk_size

    preset, overrides, finetuning_type, bf16, seq_len, micro_batch, checkpointing = CASES[name]
    model_dir = work / f"model-{name.split('-')[0]}"
    if not (model_dir / "config.json").exists():
        create_model(preset, model_dir, seed=0, overrides=overrides)
    shards = work / "shards"
    if not (shards / "meta.json").exists():
        make_corpus(work / "corpus.jsonl", 400_000)
        subprocess.run([sys.executable, "-m", "lmforge.cli", "tokenize", str(work / "corpus.jsonl"), "--tokenizer",
                        str(model_dir), "--output", str(shards)], check=True, capture_output=True)
    config = {
        "model_name_or_path": str(model_dir), "stage": "pt", "finetuning_type": finetuning_type,
        "memmap_path": str(shards), "cutoff_len": seq_len, "output_dir": str(work / "runs" / name),
        "overwrite_output_dir": True, "per_device_train_batch_size": micro_batch, "max_steps": 4,
        "learning_rate": 1e-4, "save_strategy": "no", "logging_steps": 1, "bf16": bf16,
        "gradient_checkpointing": checkpointing, "report_to": "none", "seed": 0,
    }
    config_path = work / f"{name}.json"
    config_path.write_text(json.dumps(config))
    start = time.time()
    done = subprocess.run([sys.executable, __file__, "--child", str(config_path)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    measured = (figures["peak_kib"] - figures["baseline_kib"]) * 1024

    finetuning = FinetuningArguments(finetuning_type=finetuning_type)
    shape = load_shape(model_dir, finetuning)
    setup = Setup(seq_len=seq_len, micro_batch=micro_batch, dtype="bf16" if bf16 else "fp32",
                  optimizer="adamw_torch_fused", gradient_checkpointing=checkpointing, attention="sdpa_varlen",
                  device_type="cpu", loss_chunk=default_chunk_size(shape.vocab_size, "cpu"))
    plan = estimate_memory(shape, setup)
    return {"case": name, "params": shape.total_params, "trainable": shape.trainable_params,
            "predicted": plan.total, "measured": measured, "seconds": time.time() - start,
            "command": (f"lmforge estimate {model_dir} --device-type cpu --finetuning-type {finetuning_type} "
                        f"--dtype {setup.dtype} --seq-len {seq_len} --micro-batch {micro_batch} --attention sdpa_varlen"
                        + (" --gradient-checkpointing" if checkpointing else ""))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default="/tmp/estimate_bench")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = [run_case(name, work) for name in args.cases.split(",")]
    mib = 2**20
    print("| case | params (trainable) | predicted peak MiB | measured peak MiB | predicted / measured |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['params'] / 1e6:.1f}M ({r['trainable'] / 1e6:.2f}M) | {r['predicted'] / mib:,.0f} "
              f"| {r['measured'] / mib:,.0f} | {r['predicted'] / r['measured']:.2f} |")
    for r in rows:
        print(f"# {r['case']} ({r['seconds']:.0f} s): {r['command']}")


if __name__ == "__main__":
    main()
