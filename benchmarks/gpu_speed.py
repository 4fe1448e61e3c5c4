"""The GPU speed check (issue 26, line 4): what `benchmarks/gpu_check.sh` runs on a lent H100 / H200.

    benchmarks/gpu_check.sh --out gpu_speed.json            # on the GPU machine, < 10 minutes
    benchmarks/gpu_check.sh --dry-run --out plan.json       # anywhere: builds and checks every command, runs none

A ~0.5B model (Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads over 2 KV heads, MLP 4864, 151,936-row tied
embedding; random weights, small-qwen2's tokenizer) is created once. Then, each as its own `lmforge train`
process with a time limit, on a generated SFT set of 100-1,500-token answers:

- full bf16 SFT with packing (cutoff 4096, isolated samples) through `varlen_attn` (PyTorch's FlashAttention-2
  varlen kernel), through `sdpa_varlen` (one SDPA call per sample) and unpacked with transformers' `sdpa`:
  tokens/s and MFU (goal: at least 40% with packing);
- the same packed job under DeepSpeed ZeRO-2 and ZeRO-3 and under FSDP, one GPU each (smoke: they train, their
  first losses agree with the plain run's); skipped with the reason where `deepspeed` is not installed;
- LoRA bf16 and, where bitsandbytes is installed, QLoRA (4-bit nf4);
- the continuous-batching engine (`lmforge.inference.offline.generate_all`): output tokens/s for 256 prompts at
  64 sequences at a time against one at a time.

Every result lands in one JSON file (written after each check, so a cut-off run keeps what it measured). The dry
run writes the same configs, validates each through lmforge's config loader, checks that every script it would
start exists and names what it would skip, and records the commands.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

MODEL_SHAPE = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
               "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
               "max_position_embeddings": 32768}
DRY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128}
STEPS = 30
CHECK_TIMEOUT_S = 150
ZERO = {
    2: {"zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True}},
    3: {"zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                              "stage3_gather_16bit_weights_on_model_save": True}},
}


def write_data(root: Path, n: int = 600) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        start, count = rng.randint(1, 500), rng.randint(50, 750)
        rows.append({"instruction": f"Count from {start}, {count} numbers.", "input": "",
                     "output": " ".join(str(k) for k in range(start, start + count))})
    root.mkdir(parents=True, exist_ok=True)
    (root / "count.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"count": {"file_name": "count.json"}}))
    return root


def sft_config(root: Path, name: str, model: Path, data: Path, **extra) -> dict:
    cfg = {"stage": "sft", "model_name_or_path": str(model), "dataset": "count", "dataset_dir": str(data),
           "template": "qwen", "cutoff_len": 4096, "finetuning_type": "full", "bf16": True,
           "packing": True, "per_device_train_batch_size": 4, "max_steps": STEPS, "learning_rate": 1e-5,
           "lr_scheduler_type": "constant", "logging_steps": 5, "save_strategy": "no", "seed": 0,
           "output_dir": str(root / "runs" / name), "report_to": "none", "disable_tqdm": True,
           "overwrite_output_dir": True, "data_cache_dir": str(root / "cache"), "plot_loss": False,
           "attn_implementation": "varlen_attn"}
    cfg.update(extra)
    return cfg


def plan(root: Path, model: Path, data: Path) -> list[dict]:
    """Every check: name, the config (None for in-process checks), environment, and what it needs installed."""
    ds_dir = root / "deepspeed"
    checks = [
        {"name": "sft_packed_varlen_attn", "config": sft_config(root, "packed_varlen_attn", model, data)},
        {"name": "sft_packed_sdpa_varlen",
         "config": sft_config(root, "packed_sdpa_varlen", model, data, attn_implementation="sdpa_varlen")},
        {"name": "sft_padded_sdpa", "config": sft_config(root, "padded_sdpa", model, data, packing=False,
                                                           attn_implementation="sdpa")},
    ]
    for stage in (2, 3):
        checks.append({"name": f"deepspeed_zero{stage}", "needs": "deepspeed", "env": {"FORCE_TORCHRUN": "1"},
                       "config": sft_config(root, f"zero{stage}", model, data, max_steps=10,
                                            deepspeed=str(ds_dir / f"zero{stage}.json")),
                       "deepspeed_json": (ds_dir / f"zero{stage}.json", {
                           "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                           "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, **ZERO[stage]})})
    checks += [
        {"name": "fsdp", "env": {"FORCE_TORCHRUN": "1"},
         "config": sft_config(root, "fsdp", model, data, max_steps=10, fsdp="full_shard auto_wrap",  # examples/scale_out/sft_full_fsdp.yaml's keys
                              fsdp_config={"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                           "reshard_after_forward": True})},
        {"name": "lora_bf16", "config": sft_config(root, "lora", model, data, finetuning_type="lora", lora_rank=16,
                                                   lora_target="all", learning_rate=2e-4)},
        {"name": "qlora_nf4", "needs": "bitsandbytes",
         "config": sft_config(root, "qlora", model, data, finetuning_type="lora", lora_rank=16, lora_target="all",
                              learning_rate=2e-4, quantization_bit=4)},
        {"name": "engine_throughput", "config": None},
    ]
    return checks


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    import torch

    out["cuda"] = torch.version.cuda
    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return out


def matmul_tflops() -> float:
    """bf16 8192^3 products on this GPU: the ceiling MFU is measured against besides the datasheet's."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - started) / 1e12


def summarise(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    later = train[1:] or train  # the first logging interval holds the warm-up (kernel selection, allocator)
    mean = lambda key: sum(r[key] for r in later if key in r) / max(1, sum(1 for r in later if key in r))  # noqa: E731
    return {"losses": [round(r["loss"], 4) for r in train], "tokens_per_s": round(mean("tokens_per_s"), 1),
            "mfu": round(mean("throughput/mfu"), 4), "padding_fraction": round(mean("throughput/padding_fraction"), 4),
            "peak_device_gib": max((r.get("peak_device_gib", 0) for r in rows), default=None)}


def run_train(check: dict, root: Path) -> dict:
    import yaml

    path = root / "configs" / f"{check['name']}.yaml"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", "train", str(path)], env={**os.environ, **check.get(
        "env", {})}, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    out = {"exit": proc.returncode, "seconds": round(time.perf_counter() - started, 1)}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2500:]
        out["errors"] = [line for line in proc.stderr.splitlines() if "error" in line.lower()][:8]
        return out
    out.update(summarise(Path(yaml.safe_load(path.read_text())["output_dir"])))
    return out


def engine_throughput(model: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.inference.batching import SamplingParams
    from lmforge.inference.offline import generate_all

    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).cuda().eval()
    rng = random.Random(0)
    prompts = [[rng.randrange(5, 5000) for _ in range(rng.randint(32, 256))] for _ in range(256)]
    params = SamplingParams(max_tokens=128)
    out = {}
    for seqs, count in ((1, 16), (64, 256)):
        generate_all(net, prompts[:4], SamplingParams(max_tokens=8), max_num_seqs=seqs)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        answers = generate_all(net, prompts[:count], params, max_num_seqs=seqs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(len(a.tokens) for a in answers)
        out[f"max_num_seqs={seqs}"] = {"prompts": count, "output_tokens": tokens, "seconds": round(seconds, 2),
                                       "output_tokens_per_s": round(tokens / seconds, 1)}
    out["ratio"] = round(out["max_num_seqs=64"]["output_tokens_per_s"] / out["max_num_seqs=1"]["output_tokens_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the results file (JSON)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmforge_gpu_speed"))
    parser.add_argument("--dry-run", action="store_true", help="build and validate every command; run none")
    parser.add_argument("--only", help="comma-separated check names")
    args = parser.parse_args(argv)

    import yaml

    from lmforge.model.from_config import create_model

    root = args.work
    report: dict = {"versions": versions(), "dry_run": args.dry_run, "checks": {}}
    save = lambda: args.out.write_text(json.dumps(report, indent=2))  # noqa: E731
    started = time.perf_counter()
    shape = DRY_SHAPE if args.dry_run else MODEL_SHAPE
    model = create_model("small-qwen2", root / "model", seed=0, overrides=shape, overwrite=True)
    report["model_seconds"] = round(time.perf_counter() - started, 1)
    data = write_data(root / "data")
    if not args.dry_run:
        report["matmul_bf16_tflops"] = round(matmul_tflops(), 1)
    save()
    for check in plan(root, model, data):
        name = check["name"]
        if check.get("deepspeed_json"):
            path, body = check["deepspeed_json"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body, indent=1))
        needs = check.get("needs")
        missing = needs and importlib.util.find_spec(needs) is None
        entry: dict = {}
        if check["config"] is not None:
            path = root / "configs" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(check["config"], sort_keys=False))
            entry["command"] = " ".join([*(f"{k}={v}" for k, v in check.get("env", {}).items()), "lmforge", "train",
                                         str(path)])
        else:
            entry["command"] = f"in-process: {name}"
        if args.only and name not in args.only.split(","):
            continue  # its config is written all the same, for reruns and profiling by hand
        if args.dry_run:
            entry.update(dry_check(check, missing))
        elif missing:
            entry["skipped"] = f"{needs} is not installed"
        else:
            try:
                entry.update(run_train(check, root) if check["config"] is not None else engine_throughput(model))
            except Exception as exc:  # noqa: BLE001 - one failing check must not lose the others' figures
                entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        report["checks"][name] = entry
        print(f"{name}: {json.dumps({k: v for k, v in entry.items() if k not in ('losses', 'stderr_tail')})}",
              flush=True)
        save()
    report["seconds"] = round(time.perf_counter() - started, 1)
    save()
    failed = [n for n, e in report["checks"].items() if e.get("error") or e.get("exit") or e.get("invalid")]
    print(f"wrote {args.out}; {len(report['checks'])} checks, failed: {failed or 'none'}")
    return 1 if failed else 0


def dry_check(check: dict, missing: bool) -> dict:
    """Validate what the check would run: its config through lmforge's loader (every key, value and path)."""
    from lmforge.config.loader import load_config
    from lmforge.errors import UserError

    out: dict = {"would_skip": f"{check['needs']} is not installed"} if missing else {}
    if check["config"] is None:
        out["valid"] = importlib.util.find_spec("lmforge.inference.offline") is not None
        return out
    try:
        load_config(str(Path(check["config"]["output_dir"]).parent.parent / "configs" / f"{check['name']}.yaml"))
        out["valid"] = True
    except UserError as exc:
        if missing and check["needs"] in str(exc):
            out["valid"] = f"not checkable here: {exc}"
        else:
            out["invalid"] = str(exc)
    return out


if __name__ == "__main__":
    sys.exit(main())
