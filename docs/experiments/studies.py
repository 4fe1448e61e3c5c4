"""The training know-how studies (issue 25): one command re-runs each, on CPU, from nothing.

    python docs/experiments/studies.py schedules --work runs/studies   # c + d: LR schedules, annealing, averaging
    python docs/experiments/studies.py batching --work runs/studies    # a: dynamic length vs packing
    python docs/experiments/studies.py balancing --work runs/studies   # b: loss_weighting under packing

Everything is generated here: two `small-qwen2` models (56.4M parameters, seeds 0 and 1: a run's seed is its
model's initialisation and its data order), letter corpora and instruction sets. Every run is a real `lmforge
train` process; a run whose output_dir holds `all_results.json` is skipped, so an interrupted study resumes.
`batching` and `balancing` fine-tune the `schedules` study's cosine run on the shift-heavy mixture (run it first).
Each study writes `<work>/<study>/results.json`, its table as markdown (`table.md`) and plots (`*.png`, through
`lmforge compare`); the documents in docs/experiments/ quote them.

The data: documents "Letters: k t p a. Shifted: l u q b." (each letter moved on by one) and "Letters: k t p a.
Reversed: a p t k.", 4-12 letters; instructions "Shift each letter by one: k t p a" -> "Shifted: l u q b".
Held-out sequences never appear in training.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SEEDS = (0, 1)
MIXTURES = {"shift-heavy": 0.75, "reverse-heavy": 0.25}  # share of shift documents in the pretraining corpus
PT_STEPS = 64  # 4 rows x 256 tokens a step: 65,536 tokens a run
SCHEDULES = {
    "cosine": {"lr_scheduler_type": "cosine"},
    "linear": {"lr_scheduler_type": "linear"},
    "wsd-0.1": {"lr_scheduler_type": "warmup_stable_decay", "decay_ratio": 0.1},
    "wsd-0.25": {"lr_scheduler_type": "warmup_stable_decay", "decay_ratio": 0.25},
    "constant": {"lr_scheduler_type": "constant_with_warmup"},
}
CONSTANT_SAVE_STEPS = 8  # the constant runs keep every 8th checkpoint: decay branches and averages start there
EMA_DECAY = 0.9


# ---- data ------------------------------------------------------------------------------------------------


def letters(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


def shifted(seq: str) -> str:
    return " ".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in seq.split())


def reversed_(seq: str) -> str:
    return " ".join(reversed(seq.split()))


def document(seq: str, kind: str) -> str:
    return f"Letters: {seq}. Shifted: {shifted(seq)}." if kind == "shift" else f"Letters: {seq}. Reversed: {reversed_(seq)}."


def unique_sequences(rng: random.Random, count: int, low: int, high: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        seq = letters(rng, low, high)
        if seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_pretraining_data(data: Path) -> None:
    """Per mixture: 3,000 training documents, 200 held-out ones; two multiple-choice evaluators (shift, reverse)."""
    rng = random.Random(1234)
    heldout = unique_sequences(rng, 300, 4, 12, set())
    train = unique_sequences(rng, 6000, 4, 12, set(heldout))
    info = {}
    for name, share in MIXTURES.items():
        mix = random.Random(f"{name}-mix")
        kinds = ["shift" if mix.random() < share else "reverse" for _ in range(3000)]
        docs = [{"text": document(seq, kind)} for seq, kind in zip(train[:3000] if name == "shift-heavy" else
                                                                    train[3000:], kinds)]
        write_jsonl(data / f"pt_{name}.jsonl", docs)
        held = [{"text": document(seq, "shift" if mix.random() < share else "reverse")} for seq in heldout[:200]]
        write_jsonl(data / f"pt_{name}_heldout.jsonl", held)
        info[f"pt_{name}"] = {"file_name": f"pt_{name}.jsonl", "columns": {"prompt": "text"}}
        info[f"pt_{name}_heldout"] = {"file_name": f"pt_{name}_heldout.jsonl", "columns": {"prompt": "text"}}
    write_json(data / "dataset_info.json", info)
    mc_rng = random.Random(99)
    for kind, answer in (("shift", shifted), ("reverse", reversed_)):
        items = []
        for seq in heldout[200:300]:
            wrong = {shifted(shifted(seq)), seq, reversed_(shifted(seq)) if kind == "shift" else shifted(seq)}
            wrong.discard(answer(seq))
            choices = [answer(seq) + "."] + [w + "." for w in sorted(wrong)][:3]
            mc_rng.shuffle(choices)
            items.append({"letters": seq, "choices": choices, "gold": choices.index(answer(seq) + ".")})
        write_jsonl(data / f"mc_{kind}.jsonl", items)
        word = "Shifted" if kind == "shift" else "Reversed"
        task = {"task": f"mc_{kind}", "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str((data / f"mc_{kind}.jsonl").resolve())}},
                "test_split": "test", "output_type": "multiple_choice",
                "doc_to_text": "Letters: {{letters}}. " + word + ":", "doc_to_choice": "choices",
                "doc_to_target": "gold", "metric_list": [{"metric": "acc"}]}
        (data / f"mc_{kind}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")


SFT_MIXTURES = {"short-heavy": (1200, 300), "long-heavy": (250, 600)}  # (short, long) instructions, ~70k tokens each
SHORT, LONG = (3, 6), (24, 40)


def instruction(seq: str) -> dict:
    return {"instruction": f"Shift each letter by one: {seq}", "input": "", "output": f"Shifted: {shifted(seq)}"}


def write_sft_data(data: Path) -> None:
    """Per mixture an alpaca set of short (3-6 letters) and long (24-40) instructions; held-out sets of each length,
    and their exact-match tasks (greedy answer in the run's chat template)."""
    rng = random.Random(4321)
    held_short = unique_sequences(rng, 100, *SHORT, set())
    held_long = unique_sequences(rng, 100, *LONG, set())
    info = {}
    for name, (n_short, n_long) in SFT_MIXTURES.items():
        mix = random.Random(name)
        rows = [instruction(s) for s in unique_sequences(mix, n_short, *SHORT, set(held_short))]
        rows += [instruction(s) for s in unique_sequences(mix, n_long, *LONG, set(held_long))]
        mix.shuffle(rows)
        write_json(data / f"sft_{name}.json", rows)
        info[f"sft_{name}"] = {"file_name": f"sft_{name}.json"}
    for length, held in (("short", held_short), ("long", held_long)):
        write_json(data / f"heldout_{length}.json", [instruction(s) for s in held])
        info[f"heldout_{length}"] = {"file_name": f"heldout_{length}.json"}
        task = {"task": f"shift_{length}", "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str((data / f"heldout_{length}.json").resolve())}},
                "test_split": "test", "output_type": "generate_until", "doc_to_text": "instruction",
                "doc_to_target": "output", "generation_kwargs": {"until": ["\n"], "max_gen_toks": 96},
                "metric_list": [{"metric": "exact_match"}]}
        (data / f"shift_{length}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    write_json(data / "dataset_info.json", info)


# ---- runs ------------------------------------------------------------------------------------------------


def lmforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lmforge.cli", *args], check=True)


def base_model(work: Path, seed: int) -> Path:
    path = work / "models" / f"small-qwen2-seed{seed}"
    if not (path / "config.json").exists():
        lmforge("create-model", "small-qwen2", str(path), "--seed", str(seed))
    return path


def train(run_dir: Path, config: dict) -> Path:
    """One `lmforge train` process, unless run_dir already holds a finished run."""
    if (run_dir / "all_results.json").exists():
        print(f"[skip] {run_dir} is finished", flush=True)
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(run_dir)}, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    lmforge("train", str(path))
    print(f"[done] {run_dir} in {time.perf_counter() - started:.0f} s", flush=True)
    return run_dir


COMMON = {"finetuning_type": "full", "bf16": True, "report_to": "none", "disable_tqdm": True, "logging_steps": 2,
          "weight_decay": 0.0, "warmup_ratio": 0.05, "dataloader_num_workers": 0, "overwrite_output_dir": True,
          "plot_loss": False}


def pretraining_config(work: Path, data: Path, mixture: str, seed: int, schedule: str) -> dict:
    cfg = {**COMMON, "stage": "pt", "model_name_or_path": str(base_model(work, seed)), "seed": seed,
           "dataset_dir": str(data), "dataset": f"pt_{mixture}", "eval_dataset": f"pt_{mixture}_heldout",
           "cutoff_len": 256, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
           "max_steps": PT_STEPS, "learning_rate": 1.0e-3, "eval_strategy": "steps", "eval_steps": 16,
           "save_strategy": "no", "data_cache_dir": str(work / "cache"),
           "eval_tasks": [{"label": kind, "task": str(data / f"mc_{kind}.yaml"), "batch_size": 32}
                          for kind in ("shift", "reverse")],
           **SCHEDULES[schedule]}
    if schedule == "constant" and mixture == "shift-heavy":  # the annealing / averaging arms start from these
        cfg.update(save_strategy="steps", save_steps=CONSTANT_SAVE_STEPS, ema_decay=EMA_DECAY)
    return cfg


# ---- post-hoc measurements ---------------------------------------------------------------------------------


def mean_token_loss(model_dir: Path, pairs: list[tuple[list[int], list[int]]]) -> float:
    """Mean next-token loss over the target ids of (context ids, target ids) pairs, fp32, one pass each."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for context, target in pairs:
            ids = torch.tensor([context + target])
            logits = model(ids).logits[0, len(context) - 1 : -1].float()
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum").item()
            count += len(target)
    return total / count


def document_pairs(tokenizer_dir: Path, path: Path) -> list[tuple[list[int], list[int]]]:
    """Held-out documents as `stage: pt` trains on them: the text's ids and eos; every id after the first scored."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        ids = tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((ids[:1], ids[1:]))
    return out


def response_pairs(tokenizer_dir: Path, path: Path) -> list[tuple[list[int], list[int]]]:
    """Held-out instructions as `stage: sft` encodes them (template qwen): prompt ids, then the labelled answer ids."""
    from transformers import AutoTokenizer

    from lmforge.data.templates import get_template
    from lmforge.types import Conversation, Message, Role

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = get_template("qwen", tok)
    out = []
    for row in json.loads(path.read_text(encoding="utf-8")):
        conv = Conversation([Message(Role.USER, row["instruction"]), Message(Role.ASSISTANT, row["output"])])
        ((prompt, answer),) = template.encode_turns(tok, conv)
        out.append((prompt, answer))
    return out


def task_score(model_dir: Path, task: Path, metric: str, chat: bool, output: Path) -> float:
    from lmforge.eval.runner import load_eval_config, run_eval

    overrides = [f"model_name_or_path={model_dir}", f"tasks={task}", f"apply_chat_template={str(chat).lower()}",
                 "batch_size=50", f"output_path={output}"]
    report = run_eval(load_eval_config(None, overrides))
    return float(report["results"][task.stem][f"{metric},none"])


def measured(root: Path, key: str, measure) -> dict:
    """`measure()` once per key: post-hoc figures of a finished model are kept in <root>/measures.json, so a
    rerun (new plots, an added arm) does not evaluate every model again."""
    path = root / "measures.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    if key not in cache:
        cache[key] = measure()
        write_json(path, cache)
    return cache[key]


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "trainer_log.jsonl").read_text().splitlines() if line.strip()]


def last(rows: list[dict], key: str, step: int | None = None):
    values = [r[key] for r in rows if key in r and (step is None or r.get("step") == step)]
    return values[-1] if values else None


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, half the range): with two seeds, half the range is the distance of each seed from the mean."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def cell(values: list[float], digits: int = 3) -> str:
    mean, half = spread(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def compare_plot(runs: list[Path], metrics: list[str], out: Path, x: str = "step") -> None:
    args = ["compare", *map(str, runs), "--x", x, "--plot", str(out)]
    for metric in metrics:
        args += ["--metric", metric]
    lmforge(*args)


def plot_runs(groups: dict[str, list[Path]], path: Path, x: str = "step", from_step: int = 0) -> None:
    """Per arm (its runs are the seeds): training loss (mean over seeds; x = optimizer step or tokens seen), the
    learning rate and the eval loss, raw, with the seeds' range shaded. Steps before `from_step` are left out
    of the loss panel so that the differences at the end are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "training loss"), ("lr", "learning rate"), ("eval_loss", "eval loss")]
    panels = [(k, t) for k, t in panels if any(k in r for runs in groups.values() for run in runs for r in log_rows(run))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4))
    for ax, (key, title) in zip(axes, panels):
        for arm, runs in groups.items():
            series = []
            for run in runs:
                rows = [r for r in log_rows(run) if key in r and r.get("step", 0) >= (from_step if key != "lr" else 0)]
                xs = [r["throughput/tokens_total"] if x == "tokens" else r["step"] for r in rows
                      if x != "tokens" or "throughput/tokens_total" in r]
                ys = [r[key] for r in rows if x != "tokens" or "throughput/tokens_total" in r]
                series.append(dict(zip(xs, ys)))
            if not series or not all(series):
                continue
            if x == "tokens":  # the seeds log at different token counts: their curves on one grid, interpolated
                import numpy as np

                low, high = max(min(s) for s in series), min(max(s) for s in series)
                common = list(np.linspace(low, high, 40)) if high > low else [high]
                values = [[float(np.interp(c, sorted(s), [s[k] for k in sorted(s)])) for s in series] for c in common]
            else:
                common = sorted(set.intersection(*(set(s) for s in series)))
                values = [[s[c] for s in series] for c in common]
            line, = ax.plot(common, [statistics.fmean(v) for v in values], label=arm, linewidth=1.5)
            ax.fill_between(common, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("tokens seen" if x == "tokens" else "step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_arms(arms: dict[str, dict], key: str, path: Path, title: str) -> None:
    """One bar per arm at the seeds' mean, each seed's value as a point on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(arms)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
    for i, name in enumerate(names):
        values = arms[name][key]
        ax.barh(i, statistics.fmean(values), color="tab:blue", alpha=0.35)
        ax.plot(values, [i] * len(values), "o", color="tab:blue")
    low = min(v for a in arms.values() for v in a[key])
    high = max(v for a in arms.values() for v in a[key])
    ax.set_xlim(low - (high - low) * 0.3, high + (high - low) * 0.3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- c + d: schedules, annealing, averaging ----------------------------------------------------------------


def schedules_study(work: Path) -> dict:
    root, data = work / "schedules", work / "schedules" / "data"
    write_pretraining_data(data)
    runs: dict[tuple[str, str, int], Path] = {}
    for mixture in MIXTURES:
        for seed in SEEDS:
            for schedule in SCHEDULES:
                runs[mixture, schedule, seed] = train(root / "runs" / f"{mixture}_{schedule}_seed{seed}",
                                                      pretraining_config(work, data, mixture, seed, schedule))
    results: dict = {"c": {}, "d": {}}
    table_c = []
    for mixture in MIXTURES:
        for schedule in SCHEDULES:
            per_seed = [log_rows(runs[mixture, schedule, seed]) for seed in SEEDS]
            entry = {key: [last(rows, key) for rows in per_seed] for key in
                     ("eval_loss", "eval/shift/acc", "eval/reverse/acc")}
            entry["train loss (mean of the last 8 steps)"] = [
                statistics.fmean([r["loss"] for r in rows if "loss" in r and r["step"] > PT_STEPS - 8]) for rows in per_seed]
            entry["loss at 50%"] = [last(rows, "eval_loss", PT_STEPS // 2) for rows in per_seed]
            entry["tokens/s"] = [statistics.fmean([r["tokens_per_s"] for r in rows if "tokens_per_s" in r])
                                 for rows in per_seed]
            results["c"][f"{mixture}/{schedule}"] = entry
            table_c.append([mixture, schedule, cell(entry["eval_loss"]), cell(entry["loss at 50%"]),
                            cell(entry["eval/shift/acc"], 2), cell(entry["eval/reverse/acc"], 2)])
        plot_runs({s: [runs[mixture, s, seed] for seed in SEEDS] for s in SCHEDULES}, root / f"schedules_{mixture}.png",
                  from_step=24)
    results["c_table"] = markdown_table(["mixture", "schedule", "final eval loss", "eval loss at step 32",
                                         "shift acc (MC)", "reverse acc (MC)"], table_c)
    results["d"], results["d_table"] = annealing_arms(work, root, data, runs)
    plot_arms(results["d"], "heldout loss", root / "annealing_arms.png", "held-out loss per document token (dots: seeds)")
    write_json(root / "results.json", results)
    (root / "table.md").write_text(results["c_table"] + "\n\n" + results["d_table"] + "\n", encoding="utf-8")
    print(results["c_table"], "\n\n", results["d_table"], flush=True)
    return results


def annealing_arms(work: Path, root: Path, data: Path, runs: dict) -> tuple[dict, str]:
    """On the shift-heavy mixture: the constant run at 48 and 64 steps, a 16-step decay branched from its
    checkpoints at 32 and 48, WSD(0.25) trained through, the average of its last 4 checkpoints, its EMA."""
    mixture = "shift-heavy"
    held = data / f"pt_{mixture}_heldout.jsonl"
    arms: dict[str, list[Path]] = {}
    for seed in SEEDS:
        constant = runs[mixture, "constant", seed]
        for start in (32, 48):
            branch = root / "runs" / f"decay-from-{start}_seed{seed}"
            if not (branch / "all_results.json").exists():
                # the stable run's optimizer, scheduler and data position, continued under a schedule whose decay
                # (the last 16 steps) begins at that checkpoint
                shutil.rmtree(branch, ignore_errors=True)
                branch.mkdir(parents=True)
                shutil.copytree(constant / f"checkpoint-{start}", branch / f"checkpoint-{start}")
            cfg = pretraining_config(work, data, mixture, seed, "wsd-0.25")
            cfg.update(max_steps=start + 16, decay_ratio=16 / (start + 16), save_strategy="no",
                       resume_from_checkpoint=str(branch / f"checkpoint-{start}"), overwrite_output_dir=False)
            cfg.pop("ema_decay", None)
            train(branch, cfg)
            arms.setdefault(f"constant to {start} + 16-step decay ({start + 16} steps)", []).append(branch)
        average = root / "runs" / f"average-last-4_seed{seed}"
        if not (average / "config.json").exists():
            lmforge("average", *(str(constant / f"checkpoint-{s}") for s in (40, 48, 56, 64)), "--output", str(average))
        arms.setdefault("constant, 48 steps", []).append(constant / "checkpoint-48")
        arms.setdefault("constant, 64 steps", []).append(constant)
        arms.setdefault("WSD 0.25 trained through (64 steps)", []).append(runs[mixture, "wsd-0.25", seed])
        arms.setdefault("average of checkpoints 40, 48, 56, 64", []).append(average)
        arms.setdefault(f"EMA ({EMA_DECAY}) of the constant run, 64 steps", []).append(constant / "ema")
    results, table = {}, []
    for arm, dirs in arms.items():
        losses, accs = [], []
        for model_dir in dirs:
            # checkpoints, the average and the EMA hold no tokenizer: the run's (the same preset's in every run)
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                source = runs[mixture, "constant", 0] / name
                if not (model_dir / name).exists() and source.exists():
                    shutil.copy(source, model_dir / name)
            figures = measured(root, str(model_dir), lambda: {
                "loss": mean_token_loss(model_dir, document_pairs(model_dir, held)),
                "acc": task_score(model_dir, data / "mc_shift.yaml", "acc", False, root / "eval" / model_dir.name)})
            losses.append(figures["loss"])
            accs.append(figures["acc"])
        results[arm] = {"heldout loss": losses, "shift acc": accs, "dirs": [str(d) for d in dirs]}
        table.append([arm, cell(losses), cell(accs, 2)])
    return results, markdown_table(["arm (shift-heavy mixture)", "held-out loss", "shift acc (MC)"], table)


# ---- a: dynamic length vs packing --------------------------------------------------------------------------

BATCHING_ARMS = {
    "group_by_length": {"group_by_length": True},
    "max_tokens_per_batch": {"max_tokens_per_batch": 2048},
    "packing (isolated)": {"packing": True, "neat_packing": True, "per_device_train_batch_size": 4},
    "packing (plain)": {"packing": True, "neat_packing": False, "per_device_train_batch_size": 4},
}


def sft_base(work: Path, seed: int) -> Path:
    path = work / "schedules" / "runs" / f"shift-heavy_cosine_seed{seed}"
    if not (path / "all_results.json").exists():
        raise SystemExit(f"{path} is missing: run `studies.py schedules --work {work}` first")
    return path


def sft_config(work: Path, data: Path, dataset: str, seed: int, arm: dict) -> dict:
    return {**COMMON, "stage": "sft", "model_name_or_path": str(sft_base(work, seed)), "seed": seed,
            "dataset_dir": str(data), "dataset": dataset, "template": "qwen", "cutoff_len": 512,
            "num_train_epochs": 1, "learning_rate": 5.0e-4, "lr_scheduler_type": "cosine",
            "save_strategy": "no", "data_cache_dir": str(work / "cache"), **arm}


def mean_tokens(path: Path, tokenizer_dir: Path) -> float:
    pairs = response_pairs(tokenizer_dir, path)
    return statistics.fmean(len(p) + len(a) for p, a in pairs)


def sft_measures(run: Path, data: Path) -> dict:
    root = run.parent.parent  # <work>/<study>: its measures.json and eval outputs
    return measured(root, str(run), lambda: measure_sft(run, data, root))


def measure_sft(run: Path, data: Path, root: Path) -> dict:
    rows = log_rows(run)
    out = {"tokens/s": statistics.fmean([r["tokens_per_s"] for r in rows if "tokens_per_s" in r]),
           "train s": json.loads((run / "all_results.json").read_text())["train_runtime"],
           "steps": max(r["step"] for r in rows)}
    for length in ("short", "long"):
        out[f"{length} loss"] = mean_token_loss(run, response_pairs(run, data / f"heldout_{length}.json"))
        out[f"{length} exact"] = task_score(run, data / f"shift_{length}.yaml", "exact_match", True,
                                            root / "eval" / f"{run.name}_{length}")
    return out


def batching_study(work: Path) -> dict:
    root, data = work / "batching", work / "batching" / "data"
    write_sft_data(data)
    results, table = {}, []
    for mixture in SFT_MIXTURES:
        average = mean_tokens(data / f"sft_{mixture}.json", sft_base(work, 0))
        batch = max(1, round(2048 / average))  # padded arms: about the tokens of a 4 x 512 packed step
        for name, arm in BATCHING_ARMS.items():
            arm = {"per_device_train_batch_size": batch, **arm}
            measures = []
            for seed in SEEDS:
                run = train(root / "runs" / f"{mixture}_{name.split()[0]}{'-plain' if 'plain' in name else ''}_seed{seed}",
                            sft_config(work, data, f"sft_{mixture}", seed, arm))
                measures.append(sft_measures(run, data))
            entry = {key: [m[key] for m in measures] for key in measures[0]}
            entry["batch"] = arm.get("per_device_train_batch_size")
            results[f"{mixture}/{name}"] = entry
            table.append([mixture, name, cell(entry["tokens/s"], 0), cell(entry["train s"], 1), str(entry["steps"][0]),
                          cell(entry["short loss"]), cell(entry["long loss"]), cell(entry["short exact"], 2),
                          cell(entry["long exact"], 2)])
    results["table"] = markdown_table(["mixture", "batching", "tokens/s", "train s", "steps", "short held-out loss",
                                       "long held-out loss", "short exact", "long exact"], table)
    for mixture in SFT_MIXTURES:
        arms = sorted({p.name.rsplit("_seed", 1)[0] for p in (root / "runs").glob(f"{mixture}_*_seed*") if p.is_dir()})
        plot_runs({arm: sorted((root / "runs").glob(f"{arm}_seed*")) for arm in arms}, root / f"batching_{mixture}.png",
                  x="tokens")
        compare_plot(sorted((root / "runs").glob(f"{mixture}_*_seed0")), ["loss"], root / f"compare_{mixture}_seed0.png",
                     x="tokens")
    write_json(root / "results.json", results)
    (root / "table.md").write_text(results["table"] + "\n", encoding="utf-8")
    print(results["table"], flush=True)
    return results


# ---- b: loss balancing under packing -----------------------------------------------------------------------


def balancing_study(work: Path) -> dict:
    root, data = work / "balancing", work / "batching" / "data"
    write_sft_data(data)
    results, table, runs = {}, [], {}
    batch = max(1, round(2048 / mean_tokens(data / "sft_short-heavy.json", sft_base(work, 0))))
    for weighting in ("token", "sample"):
        measures = []
        for seed in SEEDS:
            arm = {**BATCHING_ARMS["packing (isolated)"], "loss_weighting": weighting}
            # token weighting is the default: the batching study's isolated-packing run on this mixture is that arm
            reused = work / "batching" / "runs" / f"short-heavy_packing_seed{seed}"
            run = reused if weighting == "token" and (reused / "all_results.json").exists() else train(
                root / "runs" / f"short-heavy_{weighting}_seed{seed}",
                sft_config(work, data, "sft_short-heavy", seed, {"per_device_train_batch_size": batch, **arm}))
            runs.setdefault(weighting, []).append(run)
            measures.append(sft_measures(run, data))
        entry = {key: [m[key] for m in measures] for key in measures[0]}
        results[weighting] = entry
        table.append([weighting, cell(entry["short loss"]), cell(entry["long loss"]), cell(entry["short exact"], 2),
                      cell(entry["long exact"], 2)])
    results["table"] = markdown_table(["loss_weighting", "short held-out loss", "long held-out loss", "short exact",
                                       "long exact"], table)
    plot_runs(runs, root / "balancing.png", x="tokens")
    write_json(root / "results.json", results)
    (root / "table.md").write_text(results["table"] + "\n", encoding="utf-8")
    print(results["table"], flush=True)
    return results


STUDIES = {"schedules": schedules_study, "batching": batching_study, "balancing": balancing_study}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=tuple(STUDIES))
    parser.add_argument("--work", type=Path, default=Path("runs/studies"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    STUDIES[args.study](args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
