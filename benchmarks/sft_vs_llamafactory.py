"""Side-by-side SFT benchmark: lmforge against LLaMA-Factory 0.9.5, same model, data and hyper-parameters.

    benchmarks/run_sft_bench.sh                                  # everything: install LF if needed, run, print
    .venv/bin/python benchmarks/sft_vs_llamafactory.py --samples 64 --precisions fp32 --variants lf_default

Defaults: the first 96 records, every variant twice (the second time in reverse order), the faster run
reported: about 30 minutes on 2 CPU cores.

What it does, in order:

1. Installs LLaMA-Factory 0.9.5 in its own venv (`benchmarks/.venv-llamafactory`) unless it is there:
   torch 2.13.0 (CPU wheel, from pip's configured index) first, then `llamafactory==0.9.5` constrained to
   that torch; then removes torchvision and moves torchaudio's compiled libraries aside (PyPI's builds
   of both are CUDA builds: with them `llamafactory-cli` dies at import on a CPU-only machine).
2. Creates the model once with lmforge's `create_model("small-qwen2", ...)`: Qwen2, hidden 512, 8 layers,
   32,000-row vocabulary, bf16 weights. Both sides load the same directory.
3. Tokenizes the first `--samples` records of alpaca_en_demo on *both* sides (template qwen, cutoff_len
   1024) and checks that input_ids and labels agree, sample by sample (digests compared). Supervised
   tokens = labels != -100 after the one-position shift (what the loss is computed on).
4. Measures the matmul peak of this machine at each precision (lmforge's calibrate_peak_flops, 3 s of
   square fp32 / bf16 matmuls); the MFU denominator is the highest of it and the per-run probes.
5. Runs every variant at every precision as its own subprocess, one at a time (`--repeats` times, the order
   reversed on every other repeat, each run preceded by a 1.5 s matmul probe of the machine's current
   speed: on a shared machine it drifts, up to 3x here, and the probe column shows it), polling the RSS
   of the process tree (psutil) and recording the kernel's high-water mark of the largest process
   (`/usr/bin/time -f %M`), then reads the run's `trainer_log.jsonl` (loss per step; both frameworks
   write one) and `train_results.json` / `all_results.json` (HF Trainer's `train_runtime`).
6. Prints one table per precision and the ratios the issue targets, and writes `results.json`.

Fairness rules: identical hyper-parameters (`COMMON`), the same samples (`max_samples` takes the first N
records on both sides), full fine-tuning, per-device batch 4, no gradient accumulation, no dataloader
workers, one preprocessing process, caches re-built (`overwrite_cache`), nothing saved during training.
"fp32" is fp32 weights and compute on both sides. "bf16" is `bf16: true` on both sides: fp32 master weights
with bf16 autocast (LLaMA-Factory upcasts trainable weights to fp32 unless `pure_bf16`; lmforge loads fp32
on CPU). LLaMA-Factory gets `use_cpu: true`, without which HF Trainer rejects `bf16` on a CPU (lmforge sets
it itself).

Metrics (all over the training loop, HF Trainer's `train_runtime`, so process start, tokenization and the
final save are excluded from throughput; `proc s` is the whole subprocess):
  samples/s       = samples trained (the N records, packed or not) / train_runtime
  sup tok/s       = supervised tokens / train_runtime (the same count for every variant)
  MFU             = model FLOPs / train_runtime / calibrated peak. Model FLOPs from lmforge.arith.flops
                    (6N per real token, lm_head only on supervised tokens, attention 12·L·d·Σlen²; padding
                    and cross-sample attention of plain packing are not model work), identical for every
                    variant, so MFU ranks exactly like sup tok/s.
  peak RSS        = max over time of the summed RSS of the process tree (polled every 0.2 s), worst repeat
  final loss      = loss logged at the last step (logging_steps 1)
  other load      = share of all cores' time during the run spent by anything else (other processes plus
                    hypervisor steal, from /proc/stat minus the run's own CPU time): a run that had to share
                    the machine shows it here
With `--repeats` > 1 each row is the fastest repeat (interference only adds time); every repeat's training
time is listed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from llamafactory_venv import ensure_lf_venv, lf_python, offline_env
from process_metrics import cpu_ticks, machine, tree_rss

# -- what runs: edit these ------------------------------------------------------------------------------

# Extra keys of each variant, on top of COMMON. LF = LLaMA-Factory's own defaults plus its two packing modes.
LF_VARIANTS: dict[str, dict] = {
    "lf_default": {},
    "lf_packing": {"packing": True},
    "lf_neat_packing": {"neat_packing": True},
}
# lmforge: packing off (the loss-curve twin of lf_default) and lmforge's recommended sft settings.
LMFORGE_VARIANTS: dict[str, dict] = {
    "lmforge_nopack": {"packing": False},
    # Recommended sft settings: packing, which isolates packed samples by default (neat packing) and attends
    # per sample (sdpa_varlen), and selective activation checkpointing (matmul and attention outputs kept,
    # the ops between them recomputed), which holds peak memory under LLaMA-Factory's (it checkpoints whole
    # layers by default) for a few percent of speed.
    "lmforge_recommended": {"packing": True, "gradient_checkpointing": True, "selective_checkpointing": True},
    "lmforge_pack_ckpt_2nd": {
        "packing": True,
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"every_n_layers": 2},
    },
    # the activation-checkpointing trade-off, for reference (not run by default)
    "lmforge_pack_ckpt_all": {"packing": True, "gradient_checkpointing": True},
    "lmforge_pack_ckpt_4th": {
        "packing": True,
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"every_n_layers": 4},
    },
    "lmforge_pack_no_ckpt": {"packing": True},
}

# Identical on both sides.
COMMON: dict = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "full",
    "dataset": "alpaca_en_demo",
    "template": "qwen",
    "cutoff_len": 1024,
    "overwrite_cache": True,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "logging_steps": 1,
    "save_strategy": "no",
    "overwrite_output_dir": True,
    "report_to": "none",
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 2.0e-4,
    "num_train_epochs": 1.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "seed": 42,
}
LF_ONLY: dict = {"use_cpu": True}  # HF Trainer refuses bf16 on CPU without it (lmforge sets it itself)
LMFORGE_ONLY: dict = {}

PRECISIONS = {"fp32": {"bf16": False}, "bf16": {"bf16": True}}

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "llamafactory-demo"
IGNORE_INDEX = -100



# -- data: count tokens on both sides -------------------------------------------------------------------

def lf_count_main(config_path: str, out_path: str) -> None:
    """Runs inside LLaMA-Factory's venv: its own tokenization of the benchmark data -> lengths, supervised."""
    import yaml
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = yaml.safe_load(Path(config_path).read_text())
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    train = dataset["train_dataset"]
    Path(out_path).write_text(json.dumps(_token_summary(train["input_ids"], train["labels"])))


def _token_summary(input_ids: list[list[int]], labels: list[list[int]]) -> dict:
    """Per sample: length, supervised tokens (labels after the shift), and a digest of the ids and labels."""
    import hashlib

    return {
        "lengths": [len(ids) for ids in input_ids],
        "supervised": [sum(label != IGNORE_INDEX for label in row[1:]) for row in labels],
        "digests": [hashlib.sha1(json.dumps([list(ids), list(row)]).encode()).hexdigest()[:16]
                    for ids, row in zip(input_ids, labels, strict=True)],
    }


def count_tokens(model_dir: Path, data_dir: Path, samples: int, work: Path, venv: Path) -> dict:
    """Per-sample lengths and supervised tokens from lmforge's and from LLaMA-Factory's tokenization."""
    from lmforge.config import load_config
    from lmforge.data.pipeline import build_datasets
    from lmforge.data.templates import get_template
    from lmforge.model.tokenizer import load_tokenizer

    cfg = load_config(None, [f"model_name_or_path={model_dir}", "dataset=alpaca_en_demo", f"dataset_dir={data_dir}",
                             "template=qwen", f"cutoff_len={COMMON['cutoff_len']}", f"max_samples={samples}",
                             f"output_dir={work / 'lmforge_count'}", f"data_cache_dir={work / 'lmforge_count'}",
                             "overwrite_cache=true"])
    tokenizer = load_tokenizer(cfg.model)
    train = build_datasets(cfg.data, "sft", tokenizer, get_template("qwen", tokenizer), seed=42).train
    ours = _token_summary(train["input_ids"], train["labels"])
    lf_cfg = work / "lf_count.yaml"
    _write_yaml(lf_cfg, {**COMMON, **LF_ONLY, "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir),
                         "max_samples": samples, "output_dir": str(work / "lf_count")})
    out = work / "lf_count.json"
    subprocess.run([str(lf_python(venv)), str(Path(__file__).resolve()), "--lf-count", str(lf_cfg), str(out)],
                   check=True, env=offline_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs = json.loads(out.read_text())
    return {"lmforge": ours, "llamafactory": theirs}


# -- FLOPs ----------------------------------------------------------------------------------------------

def model_training_flops(model_dir: Path, lengths: list[int], supervised: list[int]) -> float:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    try:
        from lmforge.model.flops import model_flops

        mf = model_flops(config)
        return mf.training_flops(sum(lengths), sum(supervised), {None: float(sum(n * n for n in lengths))})
    except ImportError:  # fallback: PaLM's 6N + 12·L·d·T, N = matmul weights incl. lm_head
        h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        d = h // heads
        per_layer = 2 * h * heads * d + 2 * h * kv * d + 3 * h * inter
        n = layers * per_layer + config.vocab_size * h
        return 6 * n * sum(lengths) + 12 * layers * heads * d * sum(x * x for x in lengths)


def calibrate_peak(precision: str, seconds: float = 3.0) -> tuple[float, str]:
    """Dense matmul FLOP/s of this machine at `precision`, measured in a fresh process, and how."""
    code = """import sys, time, torch
dtype = torch.bfloat16 if sys.argv[1] == "bf16" else torch.float32
try:
    from lmforge.train.peak_flops import calibrate_peak_flops
except ImportError:
    try:
        from lmforge.train.peak_flops import calibrate_peak_flops
    except ImportError:
        calibrate_peak_flops = None
if calibrate_peak_flops is not None:
    print(calibrate_peak_flops("cpu", dtype, seconds=float(sys.argv[2])), "lmforge calibrate_peak_flops")
else:
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < float(sys.argv[2]):
        a @ b
        k += 1
    print(2 * n**3 * k / (time.perf_counter() - start), "1024x1024 matmul loop")
"""
    out = subprocess.run([sys.executable, "-c", code, precision, str(seconds)], check=True, capture_output=True, text=True)
    value, how = out.stdout.strip().splitlines()[-1].split(" ", 1)
    return float(value), how


# -- one run --------------------------------------------------------------------------------------------

def _write_yaml(path: Path, cfg: dict) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def run_one(name: str, side: str, cfg: dict, run_dir: Path, venv: Path, timeout: float) -> dict:
    import psutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cfg_path = run_dir / "config.yaml"
    _write_yaml(cfg_path, cfg)
    if side == "lf":
        cmd = [str(venv / "bin" / "llamafactory-cli"), "train", str(cfg_path)]
    else:
        cmd = [str(Path(sys.executable).parent / "lmforge"), "train", str(cfg_path)]
    time_file = run_dir / "time_maxrss_kb_user_sys"
    if shutil.which("/usr/bin/time"):
        cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(time_file)] + cmd
    print(f"[bench] {name}: {' '.join(cmd)}", flush=True)
    peak = 0
    cpu_before = cpu_ticks()
    start = time.perf_counter()
    with open(run_dir / "stdout.log", "w") as log:
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=offline_env(), cwd=run_dir)
        proc = psutil.Process(popen.pid)
        while popen.poll() is None:
            peak = max(peak, tree_rss(proc))
            if time.perf_counter() - start > timeout:
                popen.kill()
                break
            time.sleep(0.2)
        popen.wait()
    wall = time.perf_counter() - start
    cpu_after = cpu_ticks()
    out_dir = Path(cfg["output_dir"])
    result = {"name": name, "side": side, "returncode": popen.returncode, "process_s": wall,
              "peak_rss_tree_bytes": peak, "config": cfg}
    if time_file.exists():
        try:
            maxrss_kb, user_s, sys_s = time_file.read_text().split()[-3:]
            result["maxrss_largest_process_bytes"] = int(maxrss_kb) * 1024
            result["cpu_s"] = float(user_s) + float(sys_s)
        except ValueError:
            pass
    if cpu_before and cpu_after and "cpu_s" in result:
        # Whatever else ran on the machine meanwhile (other users' processes, the hypervisor's steal):
        # the share of all cores' time during this run not spent by the run itself.
        hz, capacity = os.sysconf("SC_CLK_TCK"), wall * (os.cpu_count() or 1)
        busy = (cpu_after[0] - cpu_before[0]) / hz
        result["other_cpu_frac"] = max(0.0, busy - result["cpu_s"]) / capacity
        result["steal_frac"] = (cpu_after[1] - cpu_before[1]) / hz / capacity
    if popen.returncode != 0:
        tail = (run_dir / "stdout.log").read_text(errors="replace").splitlines()[-15:]
        print(f"[bench] {name} FAILED (exit {popen.returncode}):\n  " + "\n  ".join(tail), flush=True)
        return result
    rows = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    losses = []
    for row in rows:
        step = row.get("step", row.get("current_steps"))
        if row.get("loss") is not None:
            losses.append((int(step), float(row["loss"])))
    result["losses"] = losses
    result["steps"] = losses[-1][0] if losses else 0
    result["final_loss"] = losses[-1][1] if losses else None
    for fname in ("train_results.json", "all_results.json"):
        path = out_dir / fname
        if path.exists():
            metrics = json.loads(path.read_text())
            if "train_runtime" in metrics:
                result["train_runtime"] = float(metrics["train_runtime"])
                result["train_loss"] = metrics.get("train_loss")
                break
    print(f"[bench] {name}: {result.get('train_runtime', float('nan')):.1f} s train, {wall:.1f} s process, "
          f"{result['steps']} steps, final loss {result['final_loss']}, peak RSS {peak / 2**30:.2f} GiB, other load "
          f"{result.get('other_cpu_frac', float('nan')) + result.get('steal_frac', 0.0):.0%}", flush=True)
    # The trained weights are not needed; keep the logs.
    for pattern in ("*.safetensors", "*.bin"):
        for path in out_dir.glob(pattern):
            path.unlink()
    return result


# -- report ---------------------------------------------------------------------------------------------

def versions(venv: Path) -> dict:
    """Package versions on each side, and lmforge's commit."""
    packages = {"llamafactory": ("llamafactory", "transformers", "torch", "datasets", "peft", "accelerate", "trl",
                                 "tokenizers"),
                "lmforge": ("lmforge", "transformers", "torch", "datasets", "peft", "accelerate", "tokenizers")}
    out = {}
    for side, python in (("llamafactory", lf_python(venv)), ("lmforge", Path(sys.executable))):
        code = ("import importlib.metadata as m, json, sys\n"
                "def v(p):\n try: return m.version(p)\n except m.PackageNotFoundError: return None\n"
                "print(json.dumps({p: v(p) for p in sys.argv[1:]}))")
        res = subprocess.run([str(python), "-c", code, *packages[side]], capture_output=True, text=True, check=False)
        out[side] = json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr[-500:]}
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False)
    commit, dirty = commit.stdout.strip(), dirty.stdout.strip()
    out["lmforge"]["commit"] = commit + (" (src/ has uncommitted changes)" if dirty else "")
    return out


def _aggregate(runs: list[dict]) -> dict:
    """One row from a variant's repeats: the fastest run (interference from other load only ever adds time,
    so the minimum is the estimate least disturbed by it), with every run's time kept alongside."""
    ok = [r for r in runs if r.get("train_runtime") is not None]
    if not ok:
        return {**runs[0], "runs": runs}
    row = dict(min(ok, key=lambda r: r["train_runtime"]))
    row["train_runtime_all"] = [r["train_runtime"] for r in ok]
    row["peak_rss_tree_bytes_all"] = [r["peak_rss_tree_bytes"] for r in ok]
    row["peak_rss_tree_bytes"] = max(row["peak_rss_tree_bytes_all"])  # memory: the worst run
    row["probe_flops_all"] = [r["probe_flops"] for r in runs]
    row["runs"] = runs
    return row


def table(precision: str, results: list[dict], n_samples: int, supervised: int, flops: float, peak: float) -> str:
    head = ("| variant | steps | train s (all runs) | proc s | samples/s | sup tok/s | MFU | peak RSS GiB "
            "| final loss | other load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    title = (f"**{precision}** ({n_samples} samples, {supervised:,} supervised tokens, "
             f"MFU peak {peak / 1e9:.1f} GFLOP/s: best matmul calibration)")
    lines = [title, "", head]
    for r in results:
        if r.get("train_runtime") is None:
            lines.append(f"| {r['name']} | failed (exit {r['returncode']}) | | | | | | | | |")
            continue
        t = r["train_runtime"]
        spread = r.get("train_runtime_all", [t])
        shown = f"{t:.1f}" if len(spread) < 2 else f"{t:.1f} ({', '.join(f'{x:.0f}' for x in spread)})"
        other = r.get("other_cpu_frac", float("nan")) + r.get("steal_frac", 0.0)
        lines.append(
            f"| {r['name']} | {r['steps']} | {shown} | {r['process_s']:.1f} | {n_samples / t:.3f} | "
            f"{supervised / t:.1f} | {flops / t / peak:.1%} | {r['peak_rss_tree_bytes'] / 2**30:.2f} | "
            f"{r['final_loss']:.4f} | {other:.0%} |")
    return "\n".join(lines)


def ratios(results: dict[str, dict]) -> list[str]:
    def tps(name):
        r = results.get(name) or {}
        return 1 / r["train_runtime"] if r.get("train_runtime") else None

    lines = []
    rec = tps("lmforge_recommended")
    base = tps("lf_default")
    best_pack = max([v for v in (tps("lf_packing"), tps("lf_neat_packing")) if v] or [0]) or None
    if rec and base:
        lines.append(f"lmforge_recommended / lf_default sup tok/s = {rec / base:.2f}x (target >= 2.0x)")
    if rec and best_pack:
        lines.append(f"lmforge_recommended / best LF packing sup tok/s = {rec / best_pack:.2f}x (target >= 1.3x)")
    nopack, lfd = tps("lmforge_nopack"), base
    if nopack and lfd:
        lines.append(f"lmforge_nopack / lf_default sup tok/s = {nopack / lfd:.2f}x")
    rss = {k: v["peak_rss_tree_bytes"] / 2**30 for k, v in results.items() if v.get("train_runtime")}
    lf_rss = ", ".join(f"{k} {v:.2f}" for k, v in rss.items() if k.startswith("lf_"))
    ours = ", ".join(f"{k} {v:.2f}" for k, v in rss.items() if not k.startswith("lf_"))
    if lf_rss and ours:
        lines.append(f"peak RSS GiB: {ours} vs {lf_rss}")
    a, b = results.get("lf_default", {}).get("losses"), results.get("lmforge_nopack", {}).get("losses")
    if a and b:
        la, lb = dict(a), dict(b)
        common = sorted(set(la) & set(lb))
        diffs = [abs(la[s] - lb[s]) for s in common]
        lines.append(f"loss curve lf_default vs lmforge_nopack over {len(common)} steps: max |diff| "
                     f"{max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e} (final {la[common[-1]]:.4f} vs "
                     f"{lb[common[-1]]:.4f})")
    return lines


# -- main -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96, help="max_samples: the first N records (default 96)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--variants", default=",".join([*LF_VARIANTS, "lmforge_nopack", "lmforge_recommended"]))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work", default=str(HERE / "runs" / "sft_bench"))
    parser.add_argument("--lf-venv", default=str(HERE / ".venv-llamafactory"))
    parser.add_argument("--repeats", type=int, default=2,
                        help="run every variant this many times, alternating the order; report the fastest")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--lf-count", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lf_count:
        lf_count_main(*args.lf_count)
        return 0

    venv, work, data = Path(args.lf_venv).resolve(), Path(args.work).resolve(), Path(args.data).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ensure_lf_venv(venv)

    model_dir = work / "model-small-qwen2"
    if not (model_dir / "model.safetensors").exists():
        from lmforge.model.from_config import create_model

        create_model("small-qwen2", model_dir, seed=0, overwrite=True)

    counts = count_tokens(model_dir, data, args.samples, work, venv)
    ours, theirs = counts["lmforge"], counts["llamafactory"]
    same = ours == theirs
    if not same:
        differing = [i for i, (a, b) in enumerate(zip(ours["digests"], theirs["digests"])) if a != b]
        print(f"[bench] WARNING: tokenization differs in {len(differing)} samples, first {differing[:5]}; "
              f"lengths lmforge {sum(ours['lengths'])} / LF {sum(theirs['lengths'])}, supervised "
              f"{sum(ours['supervised'])} / {sum(theirs['supervised'])}", flush=True)
    lengths, supervised = ours["lengths"], ours["supervised"]
    n_samples, n_sup = len(lengths), sum(supervised)
    print(f"[bench] data: {n_samples} samples, {sum(lengths):,} tokens, {n_sup:,} supervised; "
          f"LLaMA-Factory's tokenization {'is identical (ids and labels)' if same else 'DIFFERS'}",
          flush=True)
    flops = model_training_flops(model_dir, lengths, supervised)

    report = {"samples": n_samples, "tokens": sum(lengths), "supervised_tokens": n_sup, "same_tokenization": same,
              "model_flops": flops, "versions": versions(venv), "machine": machine(), "common": COMMON,
              "lf_only": LF_ONLY, "lmforge_only": LMFORGE_ONLY, "variants": {**LF_VARIANTS, **LMFORGE_VARIANTS},
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "precisions": {}}
    variants = [v for v in args.variants.split(",") if v]
    for precision in [p for p in args.precisions.split(",") if p]:
        peak, how = calibrate_peak(precision)
        print(f"[bench] {precision}: calibrated matmul peak {peak / 1e9:.1f} GFLOP/s ({how})", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            # Alternate the order between repeats, so a slow drift of the machine hits every variant alike.
            for name in (variants if repeat % 2 == 0 else variants[::-1]):
                side = "lf" if name in LF_VARIANTS else "lmforge"
                extra = LF_VARIANTS[name] if side == "lf" else LMFORGE_VARIANTS[name]
                run_dir = work / precision / (name if args.repeats == 1 else f"{name}.{repeat}")
                cfg = {**COMMON, **(LF_ONLY if side == "lf" else LMFORGE_ONLY), **PRECISIONS[precision], **extra,
                       "model_name_or_path": str(model_dir), "dataset_dir": str(data), "max_samples": args.samples,
                       "output_dir": str(run_dir / "out")}
                if side == "lmforge":
                    cfg["data_cache_dir"] = str(run_dir / "cache")
                # A short matmul probe before each run: how fast the (shared) machine is right now.
                probe, _ = calibrate_peak(precision, seconds=1.5)
                result = run_one(f"{precision}/{name}", side, cfg, run_dir, venv, args.timeout)
                result["name"], result["repeat"], result["probe_flops"] = name, repeat, probe
                runs[name].append(result)
        probes = [r["probe_flops"] for rs in runs.values() for r in rs]
        peak = max([peak, *probes])  # the machine's best observed matmul rate is the MFU denominator
        results = {name: _aggregate(rs) for name, rs in runs.items()}
        report["precisions"][precision] = {"peak_flops": peak, "peak_source": how + ", max with per-run probes",
                                           "results": results}
        (work / "results.json").write_text(json.dumps(report, indent=1))

    print()
    for precision, block in report["precisions"].items():
        print(table(precision, list(block["results"].values()), n_samples, n_sup, flops, block["peak_flops"]))
        for line in ratios(block["results"]):
            print("  " + line)
        print()
    print(f"[bench] results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
