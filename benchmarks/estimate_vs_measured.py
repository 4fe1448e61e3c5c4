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
    sampler = MallocSampler()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _rss_kib("VmRSS")
    base_in_use = sampler.in_use()
    sampler.start()
    train_main([config])
    sampler.stop()
    info = sampler._libc.mallinfo2()
    print(json.dumps({"heap_free_at_end_bytes": info.fordblks, "rss_at_end_kib": _rss_kib("VmRSS"),"baseline_kib": baseline, "peak_kib": _rss_kib("VmHWM"),
                      "malloc_peak_bytes": sampler.peak - base_in_use}))


class MallocSampler:
    """Peak bytes malloc has handed out (heap in use + mmapped blocks, glibc's mallinfo2), sampled every 0.2 ms.

    RSS also counts freed memory malloc keeps (fragmentation); this is the live-allocation figure, the CPU
    analogue of torch.cuda.max_memory_allocated.
    """

    def __init__(self):
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in
                        ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                         "fordblks", "keepcost")]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = MallInfo2
        self.peak = 0
        self._running = False

    def in_use(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def _loop(self):
        while self._running:
            self.peak = max(self.peak, self.in_use())
            time.sleep(0.0002)

    def start(self):
        import threading

        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._running = False
        self._thread.join()


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
    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.model.from_config import create_model
    from lmforge.planner.memory import Setup, estimate_memory
    from lmforge.planner.shape import load_shape

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
    allocated = figures["malloc_peak_bytes"]
    print(f"{name}: freed but kept by malloc at the end {figures['heap_free_at_end_bytes'] / 2**20:,.0f} MiB, "
          f"RSS at the end {(figures['rss_at_end_kib'] - figures['baseline_kib']) / 1024:,.0f} MiB above baseline",
          file=sys.stderr)

    finetuning = AdapterArguments.from_keys(finetuning_type=finetuning_type)
    shape = load_shape(model_dir, finetuning)
    setup = Setup(seq_len=seq_len, micro_batch=micro_batch, dtype="bf16" if bf16 else "fp32",
                  optimizer="adamw_torch_fused", gradient_checkpointing=checkpointing, attention="sdpa_varlen",
                  device_type="cpu")
    plan = estimate_memory(shape, setup)
    return {"case": name, "params": shape.total_params, "trainable": shape.trainable_params,
            "predicted": plan.total, "measured": measured, "allocated": allocated, "seconds": time.time() - start,
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
    print("| case | params (trainable) | predicted MiB | peak allocated MiB | predicted / allocated "
          "| peak RSS MiB | predicted / RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['params'] / 1e6:.1f}M ({r['trainable'] / 1e6:.2f}M) | {r['predicted'] / mib:,.0f} "
              f"| {r['allocated'] / mib:,.0f} | {r['predicted'] / r['allocated']:.2f} "
              f"| {r['measured'] / mib:,.0f} | {r['predicted'] / r['measured']:.2f} |")
    for r in rows:
        print(f"# {r['case']} ({r['seconds']:.0f} s): {r['command']}")


if __name__ == "__main__":
    main()
