"""GPU-only checks in one run (a lent CUDA machine): QLoRA through bitsandbytes' CUDA kernels, the planner's
quantized weight bytes against the allocator, the dequantized-merge export, and bf16 packing with sdpa_varlen.

    PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/gpu_check.json [--preset small-qwen2] [--steps 30]

Prints one line per check and writes every figure to --out. On a CPU-only machine it runs the same code on
the tiny preset (a dry run of the script itself; the figures then say nothing about GPUs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def versions() -> dict:
    import peft
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except ImportError as exc:
        out["bitsandbytes"] = f"missing: {exc}"
    try:
        import flash_attn

        out["flash_attn"] = flash_attn.__version__
    except ImportError:
        out["flash_attn"] = "not installed"
    return out


def write_data(root: Path, n: int = 256) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"Count from {i} to {i + 1 + i % 7}", "input": "",
             "output": " ".join(str(k) for k in range(i, i + 2 + i % 7)) + "."} for i in range(n)]
    (root / "count.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"count": {"file_name": "count.json"}}))
    return root


def train(root: Path, name: str, model_dir: Path, data: Path, steps: int, **extra) -> dict:
    import yaml

    from lmforge.cli import main

    cfg = dict(stage="sft", model_name_or_path=str(model_dir), dataset="count", dataset_dir=str(data),
               template="qwen", cutoff_len=256, finetuning_type="lora", lora_rank=16, lora_target="all",
               per_device_train_batch_size=8, max_steps=steps, learning_rate=5e-4, logging_steps=1,
               save_strategy="no", seed=0, output_dir=str(root / name), report_to="none", plot_loss=False,
               data_cache_dir=str(root / "cache"), overwrite_output_dir=True)
    cfg.update(extra)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    code = main(["train", str(path)])
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (root / name / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"exit": code, "seconds": round(seconds, 2), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "losses": losses, "peak_mib": peak}


def loaded_bytes(model_dir: Path, quantization_bit: int | None) -> tuple[float, float]:
    """(bytes the allocator holds for the loaded LoRA model, the planner's weight bytes for it)."""
    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.config.lora_args import LoraArguments
    from lmforge.config.model_args import ModelArguments
    from lmforge.config.quantization_args import QuantizationArguments
    from lmforge.model.loader import load_model
    from lmforge.planner.memory import Setup, estimate_memory
    from lmforge.planner.shape import load_shape

    adapter = AdapterArguments("lora", LoraArguments(lora_rank=16, lora_target="all"), quantization=QuantizationArguments(
        quantization_bit=quantization_bit))
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    model = load_model(ModelArguments(model_name_or_path=str(model_dir), torch_dtype="bf16"), adapter, is_trainable=True)
    if not quantization_bit:
        model.to("cuda")  # a bitsandbytes model is placed by its device_map; a plain one waits for the Trainer
    held = torch.cuda.memory_allocated() - before
    shape = load_shape(str(model_dir), AdapterArguments("lora", LoraArguments(lora_rank=16, lora_target="all")))
    plan = estimate_memory(shape, Setup(dtype="bf16", device_type="cuda", quantization_bit=quantization_bit))
    del model
    torch.cuda.empty_cache()
    return held, plan.weights


def merged_vs_qlora(root: Path, model_dir: Path) -> float:
    """Max |logit difference| between the export merged into the dequantized base and the QLoRA model itself."""
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lmforge.cli import main

    export = {"model_name_or_path": str(model_dir), "adapter_name_or_path": str(root / "qlora"), "template": "qwen",
              "finetuning_type": "lora", "quantization_bit": 4, "export_dir": str(root / "export"),
              "export_dtype": "fp32", "export_overwrite": True}
    (root / "export.yaml").write_text(yaml.safe_dump(export))
    assert main(["export", str(root / "export.yaml")]) == 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    ids = torch.tensor([[5, 17, 99, 230, 41, 7, 300, 12, 64, 128]], device=device)
    qbase = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, device_map={"": device},
                                                 dtype=torch.float32)
    qlora = PeftModel.from_pretrained(qbase, root / "qlora")
    qlora.train()  # no dropout; on CPU the eval-mode kernel needs widths divisible by 32
    merged = AutoModelForCausalLM.from_pretrained(root / "export", dtype=torch.float32).to(device)
    with torch.no_grad():
        return float((qlora(input_ids=ids).logits.float() - merged(input_ids=ids).logits.float()).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmforge_gpu_check"))
    parser.add_argument("--preset", default=None, help="default: small-qwen2 on CUDA, tiny-qwen2 on CPU")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", help="comma-separated check names to run (default: all)")
    args = parser.parse_args()

    from lmforge.model.from_config import create_model

    cuda = torch.cuda.is_available()
    preset = args.preset or ("small-qwen2" if cuda else "tiny-qwen2")
    report: dict = {"versions": versions(), "preset": preset}
    print(json.dumps(report["versions"]), flush=True)
    root = args.work
    model_dir = create_model(preset, root / "model", seed=0)
    data = write_data(root / "data")
    checks = {}

    def run(name, fn):
        if args.only and name not in args.only.split(","):
            return
        try:
            checks[name] = fn()
        except Exception as exc:  # noqa: BLE001 - report every check, whatever fails
            import traceback

            checks[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        shown = {k: v for k, v in checks[name].items() if k not in ("losses", "trace")} \
            if isinstance(checks[name], dict) else checks[name]
        print(f"{name}: {json.dumps(shown)}", flush=True)
        args.out.write_text(json.dumps({**report, "checks": checks}, indent=2))

    bf16 = {"bf16": True} if cuda else {}
    run("qlora_nf4", lambda: train(root, "qlora", model_dir, data, args.steps, quantization_bit=4, **bf16))
    run("lora_bf16", lambda: train(root, "lora", model_dir, data, args.steps, **bf16))
    run("qlora_8bit", lambda: train(root, "qlora8", model_dir, data, max(3, args.steps // 5), quantization_bit=8,
                                    **bf16))
    if cuda:
        def planner():
            out = {}
            for bits in (None, 4, 8):
                held, planned = loaded_bytes(model_dir, bits)
                out[str(bits or "bf16")] = {"allocated_mib": held / 2**20, "planned_mib": planned / 2**20,
                                            "ratio": planned / held}
            return out

        run("planner_weights", planner)
    run("export_dequantized_merge", lambda: {"max_abs_logit_diff": merged_vs_qlora(root, model_dir)})
    run("packing_sdpa_varlen_full_bf16", lambda: {
        "packed": train(root, "packed", model_dir, data, args.steps, finetuning_type="full", packing=True,
                        learning_rate=1e-4, **bf16),
        "padded": train(root, "padded", model_dir, data, args.steps, finetuning_type="full", learning_rate=1e-4,
                        **bf16)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
