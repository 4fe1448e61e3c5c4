"""Predict over 500 prompts, today's code (a6326c8) against the working tree: the issue wants at least 3x throughput.

    .venv/bin/python benchmarks/predict_throughput.py            # 500 prompts; --quick: 40, a smoke run

1. Exports the baseline's src/ (`git archive`; a6326c8 generates left-padded batches of `per_device_eval_batch_size`
   with HF generate, each batch waiting for its longest answer) into `--work`. Both sides run this venv's python
   with only PYTHONPATH changed (<export>/src, or this checkout's src); `lmforge.__file__` is checked for each.
2. Trains (once, cached in <work>/model; `--model DIR` skips it) a model whose answers stop at EOS at varied
   lengths: the demo's tiny-qwen2 and pretrain + SFT recipe (`lmforge.demo`) on "Ticket 4821: list the letters from
   c to k" -> "Letters: c d e f g h i j k", 1..26 letters (short ones commoner) whatever the prompt's length, so
   sorting by prompt length does not group equal answers (the demo's own answers are all 4 letters). Trained with
   the baseline's code: stable, not under edit. About 3 + 5 min on 2 idle cores.
3. Writes `--prompts` held-out prompts and runs `lmforge train predict.yaml` for the baseline, then the tree (never
   together): greedy, max_new_tokens 64, per_device_eval_batch_size 8 on both; the tree's max_num_seqs /
   max_batch_tokens are its defaults unless given (the baseline has neither key).
   `--repeats` times (default 3), the order reversed every other time; each side's fastest run counts
   (interference only adds time); `other load` is the share of the cores that something else used meanwhile.
4. Reads predict_results.json (predict_runtime: generation only) and generated_predictions.jsonl of each, checks
   both answered every prompt, counts identical answers (greedy: all should agree), prints samples/s, tokens/s,
   the ratio and PASS/FAIL at 3x, and writes benchmarks/results/predict_throughput.json (_quick.json for --quick).
Run it alone on the machine: on 2 cores a concurrent test run made the same predict up to 9x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import string
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import yaml
from process_metrics import cpu_ticks, machine

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LMFORGE = str(Path(PYTHON).parent / "lmforge")
LETTERS = string.ascii_lowercase
SYSTEM = "You list letters."
TARGET = 3.0


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def export_baseline(commit: str, work: Path) -> Path:
    """<work>/baseline-<sha>/src: the commit's src/, exported once."""
    root = work / f"baseline-{commit[:12]}"
    if not (root / "src" / "lmforge" / "__init__.py").is_file():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root / "src"


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "TOKENIZERS_PARALLELISM": "false"}


def imported_from(src: Path) -> str:
    """The lmforge.__file__ this PYTHONPATH imports; fails when it is not under `src`."""
    found = subprocess.run([PYTHON, "-c", "import lmforge; print(lmforge.__file__)"], env=env_for(src),
                           check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"PYTHONPATH={src} imports lmforge from {found}")
    return found


def lmforge(src: Path, argv: list[str], log: Path) -> tuple[int, float, float]:
    """`lmforge ARGV` with PYTHONPATH=src, its output into `log`: exit status, wall seconds, and the share of all
    cores' time meanwhile spent by anything else (other processes, hypervisor steal; /proc/stat)."""
    ticks, own, started = cpu_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        rc = subprocess.run([LMFORGE, *argv], env=env_for(src), stdout=out, stderr=subprocess.STDOUT).returncode
    wall, after, mine = time.perf_counter() - started, cpu_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if not (ticks and after):
        return rc, wall, float("nan")
    hz, own_s = os.sysconf("SC_CLK_TCK"), mine.ru_utime + mine.ru_stime - own.ru_utime - own.ru_stime
    other = max(0.0, (after[0] - ticks[0]) / hz - own_s) + (after[1] - ticks[1]) / hz
    return rc, wall, other / (wall * (os.cpu_count() or 1))


def record(rng: random.Random) -> dict:
    first, last = sorted((rng.randrange(26), rng.randrange(26)))
    return {"instruction": f"Ticket {rng.randrange(1000, 10000)}: list the letters from {LETTERS[first]} to "
                           f"{LETTERS[last]}", "input": "", "output": "Letters: " + " ".join(LETTERS[first:last + 1])}


def unique_records(rng: random.Random, count: int, exclude: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}  # by instruction: no prompt twice, none of `exclude`
    while len(out) < count:
        r = record(rng)
        if r["instruction"] not in exclude:
            out[r["instruction"]] = r
    return out


def write_data(data_dir: Path, seed: int, n_train: int, n_predict: int) -> None:
    """Training corpus and instructions, the held-out predict prompts, and their dataset_info.json."""
    rng = random.Random(seed)
    train = unique_records(rng, n_train, {})
    predict = unique_records(rng, n_predict, train)
    data_dir.mkdir(parents=True, exist_ok=True)
    corpus = [json.dumps({"text": f"{r['instruction']}. {r['output']}."}) for r in train.values()]
    (data_dir / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (data_dir / "range_sft.json").write_text(json.dumps(list(train.values()), indent=0), encoding="utf-8")
    (data_dir / "range_predict.json").write_text(json.dumps(list(predict.values()), indent=0), encoding="utf-8")
    info = {"range_corpus": {"file_name": "corpus.jsonl", "columns": {"prompt": "text"}},
            "range_sft": {"file_name": "range_sft.json"}, "range_predict": {"file_name": "range_predict.json"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def train_model(root: Path, src: Path, seed: int) -> Path:
    """The demo's model and pretrain + SFT recipe on the letter-range task, run with the code under `src`."""
    sys.path.insert(0, str(src))  # demo_configs / DEMO_MODEL_OVERRIDES of the stable baseline
    from lmforge.demo import DEMO_MODEL_OVERRIDES, demo_configs

    sft_dir = root / "sft"
    if (sft_dir / "model.safetensors").is_file():
        print(f"model: cached {sft_dir}")
        return sft_dir
    write_data(root / "data", seed, n_train=3000, n_predict=0)
    overrides = [arg for key, value in DEMO_MODEL_OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
    if not (root / "base" / "config.json").is_file():
        argv = ["create-model", "tiny-qwen2", str(root / "base"), "--seed", str(seed), *overrides]
        if lmforge(src, argv, root / "create.log")[0]:
            raise SystemExit(f"create-model failed; log {root / 'create.log'}")
    pt, sft = demo_configs(root, root / "base", root / "data", seed)
    pt.update(dataset="range_corpus", plot_loss=False, report_to="none")
    for key in ("eval_tasks", "eval_on_start", "eval_steps", "val_size"):
        sft.pop(key, None)
    sft.update(dataset="range_sft", default_system=SYSTEM, cutoff_len=128, eval_strategy="no", plot_loss=False,
               report_to="none")
    for name, cfg in (("pt", pt), ("sft", sft)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        rc, seconds, _ = lmforge(src, ["train", str(root / f"{name}.yaml")], root / f"{name}.log")
        print(f"model: {name} {'done' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s; log {root / name}.log")
        if rc:
            raise SystemExit(rc)
    return sft_dir


def predict_config(model: Path, data_dir: Path, out: Path, args, extra: dict) -> dict:
    return {"model_name_or_path": str(model), "stage": "sft", "finetuning_type": "full", "template": "qwen",
            "default_system": SYSTEM, "dataset_dir": str(data_dir), "dataset": "range_predict", "cutoff_len": 128,
            "do_train": False, "do_predict": True, "predict_with_generate": True, "do_sample": False,
            "max_new_tokens": args.max_new_tokens, "per_device_eval_batch_size": args.batch_size,
            "output_dir": str(out), "overwrite_output_dir": True, "report_to": "none", "disable_tqdm": True,
            "data_cache_dir": str(out.parent / f"{out.name}-cache"), "seed": args.seed, **extra}


def run_side(name: str, src: Path, cfg: dict, work: Path) -> dict:
    """One `lmforge train predict_<name>.yaml` run; its figures, answers, labels and prompts."""
    out = Path(cfg["output_dir"])
    path = work / f"predict_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cfg["data_cache_dir"], ignore_errors=True)  # tokenized afresh by each side's code
    side = {"imported": imported_from(src), "config": str(path), "log": str(work / f"{name}.log")}
    side["exit"], side["wall_s"], side["other_load"] = lmforge(src, ["train", str(path)], Path(side["log"]))
    results = out / "predict_results.json"
    if side["exit"] or not results.is_file():
        tail = Path(side["log"]).read_text(encoding="utf-8").splitlines()[-15:]
        print(f"{name}: FAILED (exit {side['exit']}) after {side['wall_s']:.0f} s; log tail:\n  " + "\n  ".join(tail))
        return side
    side["results"] = json.loads(results.read_text())
    print(f"{name}: predict_runtime {side['results']['predict_runtime']:.2f} s, other load {side['other_load']:.0%}")
    rows = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text("utf-8").splitlines()]
    side.update({f"{key}s": [row[key] for row in rows] for key in ("predict", "label", "prompt")})
    return side


def summary(runs: list[dict]) -> dict:
    """The fastest run's figures, and every run's predict_runtime and other load."""
    side = min(runs, key=lambda run: run["results"]["predict_runtime"])
    r = side["results"]
    keys = ("predict_samples", "predict_runtime", "predict_samples_per_second", "predict_tokens_per_second")
    exact = sum(p == label for p, label in zip(side["predicts"], side["labels"]))
    return {**{k: r.get(k) for k in keys}, "mean_new_tokens": round(r["predict_tokens_per_second"] *
            r["predict_runtime"] / r["predict_samples"], 2), "predictions": len(side["predicts"]),
            "exact_match": exact, "wall_s": round(side["wall_s"], 1), "other_load": round(side["other_load"], 3),
            "runtimes_s": [run["results"]["predict_runtime"] for run in runs],
            "other_loads": [round(run["other_load"], 3) for run in runs], "imported": side["imported"]}


def baseline_occupancy(model: Path, side: dict, batch_size: int, max_new_tokens: int) -> float:
    """Estimated share of the baseline's row-steps that decode an answer token (stop token included): its batches
    (prompts sorted longest first, `batch_size` at a time) each run until their longest answer stops."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prompts = [len(tok.encode(p, add_special_tokens=False)) for p in side["prompts"]]
    answers = [min(len(tok.encode(p, add_special_tokens=False)) + 1, max_new_tokens) for p in side["predicts"]]
    order = sorted(range(len(prompts)), key=lambda i: -prompts[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(answers) / sum(len(b) * max(answers[i] for i in b) for b in batches)


def compare(sides: dict[str, list[dict]], model: Path, args, prompts: int) -> dict:
    """Print the two sides and the ratio; the report's figures."""
    if not all(runs and "results" in runs[-1] for runs in sides.values()):
        print("FAIL: a side did not finish; see its log")
        return {"pass": False, **{name: [{k: run.get(k) for k in ("exit", "wall_s", "imported", "log")} for run in runs]
                                  for name, runs in sides.items()}}
    base, cur = summary(sides["baseline"]), summary(sides["current"])
    same = sum(a == b for a, b in zip(sides["baseline"][-1]["predicts"], sides["current"][-1]["predicts"]))
    ratio = cur["predict_samples_per_second"] / base["predict_samples_per_second"]
    tokens_ratio = cur["predict_tokens_per_second"] / base["predict_tokens_per_second"]
    complete = base["predictions"] == cur["predictions"] == prompts
    occupancy = baseline_occupancy(model, sides["baseline"][-1], args.batch_size, args.max_new_tokens)
    print(f"\nfastest of {args.repeats}:\n{'side':<9} {'samples':>7} {'runtime s':>9} {'samples/s':>9} {'tokens/s':>9} "
          f"{'new tok':>7} {'exact':>5} {'wall s':>6} {'other load':>10}")
    for name, s in (("baseline", base), ("current", cur)):
        print(f"{name:<9} {s['predictions']:>7} {s['predict_runtime']:>9.2f} {s['predict_samples_per_second']:>9.2f} "
              f"{s['predict_tokens_per_second']:>9.1f} {s['mean_new_tokens']:>7.1f} {s['exact_match']:>5} "
              f"{s['wall_s']:>6.1f} {s['other_load']:>10.0%}")
    print(f"identical predictions: {same}/{prompts}; the baseline's batches spend an estimated {occupancy:.0%} of "
          "their row-steps on answer tokens (the rest wait for the batch's longest answer)")
    print(f"current/baseline: {ratio:.2f}x samples/s, {tokens_ratio:.2f}x tokens/s")
    passed = complete and ratio >= TARGET
    print(f"{'PASS' if passed else 'FAIL'}: >= {TARGET:g}x today's predict throughput ({prompts} prompts"
          f"{'' if complete else '; a side did not answer every prompt'})")
    return {"baseline": base, "current": cur, "identical_predictions": same,
            "ratio_samples_per_second": round(ratio, 3), "ratio_tokens_per_second": round(tokens_ratio, 3),
            "baseline_row_step_occupancy": round(occupancy, 3), "pass": passed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="a6326c8", help="commit of today's predict")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 prompts")
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_eval_batch_size, both sides")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, help="the tree's generation key (default: its own)")
    parser.add_argument("--max-batch-tokens", type=int, help="the tree's generation key (default: its own)")
    parser.add_argument("--model", type=Path, help="a fine-tuned model of the letter-range task (skips training)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmforge-predict-throughput"))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prompts = 40 if args.quick else args.prompts
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}

    started = time.perf_counter()
    commit = git("rev-parse", args.baseline)
    sources = {"baseline": export_baseline(commit, work), "current": REPO / "src"}
    for name, src in sources.items():
        print(f"{name}: PYTHONPATH={src} imports {imported_from(src)}")
    phases["export_s"] = time.perf_counter() - started

    started = time.perf_counter()
    model = args.model.resolve() if args.model else train_model(work / "model", sources["baseline"], args.seed)
    phases["model_s"] = time.perf_counter() - started
    data_dir = work / f"predict-data-{prompts}"
    write_data(data_dir, args.seed, n_train=3000, n_predict=prompts)  # same seed: the training prompts excluded

    extra = {k: v for k, v in (("max_num_seqs", args.max_num_seqs), ("max_batch_tokens", args.max_batch_tokens))
             if v is not None}
    configs = {name: predict_config(model, data_dir, work / f"out-{name}", args, extra if name == "current" else {})
               for name in sources}
    sides: dict[str, list[dict]] = {name: [] for name in sources}
    for repeat in range(args.repeats):
        for name in list(sources)[:: 1 if repeat % 2 == 0 else -1]:
            started = time.perf_counter()
            sides[name].append(run_side(name, sources[name], configs[name], work))
            phases[f"predict_{name}_s"] = phases.get(f"predict_{name}_s", 0.0) + time.perf_counter() - started
        if not all(runs[-1].get("results") for runs in sides.values()):
            break
    report = {"settings": {"prompts": prompts, "repeats": args.repeats, "per_device_eval_batch_size": args.batch_size,
                           "max_new_tokens": args.max_new_tokens, "do_sample": False, "current_generation_keys": extra,
                           "model": str(model), "seed": args.seed, "work": str(work)},
              "baseline_commit": commit, "current_commit": git("rev-parse", "HEAD"),
              "current_uncommitted": git("status", "--porcelain", "src").splitlines(), "machine": machine(),
              "versions": {pkg: version(pkg) for pkg in ("torch", "transformers", "datasets")},
              "phases_s": {k: round(v, 1) for k, v in phases.items()}}
    report.update(compare(sides, model, args, prompts))
    print("phases: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in phases.items()))
    path = REPO / "benchmarks" / "results" / f"predict_throughput{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
