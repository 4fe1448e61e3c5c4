"""`lmforge demo`: the whole pipeline on a task a tiny model can learn on a laptop CPU (73 s on 2 idle cores).

    lmforge demo --output-dir runs/demo

1. create a fresh tiny model and tokenizer (`create-model tiny-qwen2`, hidden size 128);
2. write a corpus of 4-letter sequences and their shifts (each letter moved one on: a->b, z->a), and an
   alpaca-format SFT set asking "Shift each letter by one: k t p a" -> "Shifted: l u q b", with a held-out
   set of sequences never seen in training;
3. pretrain (`stage: pt`) on the corpus, then fine-tune (`stage: sft`) on the instructions, each from a
   YAML written into the output dir and run exactly as `lmforge train` would;
   The SFT run scores the held-out set with an in-loop evaluator (`eval_tasks`: an lm-evaluation-harness
   generate_until task, shift_heldout.yaml, prompts in the run's chat template, exact match) before its first
   step and at the end: the accuracy before and after fine-tuning;
4. score the saved fine-tuned model with `lmforge eval` on the same task file (the same figure as the in-loop
   one at the end), and print both accuracies and the eval losses;
5. write chat.yaml for the fine-tuned model, answer one held-out prompt through it (the `lmforge chat` /
   `lmforge api` engine) and print the commands that chat with and serve the model.

The terminal shows each phase with a progress bar; everything `lmforge train` would print besides (data
and model reports, a line per log step) goes to `demo.log` in the output dir.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmforge.logging import get_logger

logger = get_logger(__name__)

LETTERS = string.ascii_lowercase
DEMO_MODEL_OVERRIDES = {"hidden_size": 128, "intermediate_size": 384}  # hidden 64 learns the format, not the map
SEQUENCE_LENGTH = 4  # 26**4 = 456,976 sequences: the held-out ones are unseen, not memorised
LOG_FILE = "demo.log"
PHASES = 5


HELDOUT_TASK = "shift_heldout"
EVALUATOR = "shift"  # its figures are logged as eval/shift/exact_match


@dataclass
class DemoResult:
    accuracy_before: float  # the in-loop evaluator before the first SFT step
    accuracy_after: float  # the in-loop evaluator at the last SFT step
    accuracy_standalone: float  # `lmforge eval` on the saved fine-tuned model
    sft_eval_loss_first: float
    sft_eval_loss_last: float
    pt_dir: Path
    sft_dir: Path
    chat_config: Path
    chat_prompt: str
    chat_answer: str
    check_config: Path | None = None  # check.yaml: `lmforge check` of the fine-tuned model before shipping it


def _sequences(rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        seq = " ".join(rng.choice(LETTERS) for _ in range(SEQUENCE_LENGTH))
        if seq not in exclude and seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def _shift(seq: str) -> str:
    # "Shifted:" puts a space before every answer letter, so letters are the same kind of token as in the prompt.
    return "Shifted: " + " ".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in seq.split())


def write_demo_data(data_dir: Path, seed: int, n_train: int = 3000, n_heldout: int = 100) -> list[dict]:
    """Write corpus, SFT data and dataset_info.json; return the held-out records."""
    rng = random.Random(seed)
    heldout = _sequences(rng, n_heldout, exclude=set())
    train = _sequences(rng, n_train, exclude=set(heldout))
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "corpus.jsonl", "w", encoding="utf-8") as f:
        for seq in train:
            f.write(json.dumps({"text": f"Letters: {seq}. {_shift(seq)}."}) + "\n")
    sft = [{"instruction": f"Shift each letter by one: {seq}", "input": "", "output": _shift(seq)} for seq in train]
    (data_dir / "shift_sft.json").write_text(json.dumps(sft, indent=0), encoding="utf-8")
    held = [{"instruction": f"Shift each letter by one: {seq}", "input": "", "output": _shift(seq)} for seq in heldout]
    (data_dir / "shift_heldout.json").write_text(json.dumps(held, indent=0), encoding="utf-8")
    info = {
        "demo_corpus": {"file_name": "corpus.jsonl", "columns": {"prompt": "text"}},
        "shift_sft": {"file_name": "shift_sft.json"},
        "shift_heldout": {"file_name": "shift_heldout.json"},
    }
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    write_heldout_task(data_dir)
    return held


def write_heldout_task(data_dir: Path) -> Path:
    """The held-out set as an lm-evaluation-harness task: the instruction is the prompt (rendered in the run's chat
    template by `apply_chat_template`), the greedy answer up to the end of the turn must equal the output."""
    task = {
        "task": HELDOUT_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str((data_dir / "shift_heldout.json").resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "instruction",
        "doc_to_target": "output",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 16},
        "metric_list": [{"metric": "exact_match"}],
    }
    path = data_dir / f"{HELDOUT_TASK}.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return path


def demo_configs(root: Path, base_dir: Path, data_dir: Path, seed: int) -> tuple[dict, dict]:
    common = {
        "dataset_dir": str(data_dir),
        "finetuning_type": "full",
        "cutoff_len": 64,
        "seed": seed,
        "logging_steps": 20,
        "save_strategy": "no",
        "plot_loss": True,
        "overwrite_output_dir": True,
        "data_cache_dir": str(root / "cache"),
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
        "weight_decay": 0.0,
        "dataloader_num_workers": 0,
    }
    pt = {
        **common,
        "stage": "pt",
        "model_name_or_path": str(base_dir),
        "dataset": "demo_corpus",
        "cutoff_len": 128,
        "output_dir": str(root / "pt"),
        "per_device_train_batch_size": 16,
        "learning_rate": 2.0e-3,
        "num_train_epochs": 6,
    }
    sft = {
        **common,
        "stage": "sft",
        "model_name_or_path": str(root / "pt"),
        "dataset": "shift_sft",
        "template": "qwen",
        "default_system": "You shift letters.",
        "val_size": 200,
        "eval_strategy": "steps",
        "eval_steps": 50,
        # held-out exact match before the first step, every 150 steps and at the end: 6 scorings of 100 greedy
        # answers, +1.9% on the SFT run (benchmarks/inloop_eval_overhead.py)
        "eval_tasks": [{"label": EVALUATOR, "task": str(data_dir / f"{HELDOUT_TASK}.yaml"), "apply_chat_template": True,
                        "batch_size": 100, "eval_interval": 150}],
        "eval_on_start": True,
        "per_device_eval_batch_size": 64,
        "output_dir": str(root / "sft"),
        "per_device_train_batch_size": 32,
        "learning_rate": 1.0e-3,
        # 6 epochs reached 62% at seed 0 (the map is learnt late, in a jump); 8 reached 91% (seed 2: 95%) and
        # reach 99% since the templates encode prompt and response apart (issue 16; measured, cause not isolated).
        "num_train_epochs": 8,
    }
    return pt, sft


def standalone_accuracy(model_dir: Path, data_dir: Path, output_path: Path) -> float:
    """`lmforge eval` on a saved model: the held-out task with the run's template (from its lmforge_run.json)."""
    from lmforge.eval.runner import load_eval_config, run_eval

    overrides = [f"model_name_or_path={model_dir}", f"tasks={data_dir / f'{HELDOUT_TASK}.yaml'}",
                 "apply_chat_template=true", "batch_size=100", f"output_path={output_path}"]
    report = run_eval(load_eval_config(None, overrides))
    return float(report["results"][HELDOUT_TASK]["exact_match,none"])


def _evaluator_accuracies(output_dir: Path) -> list[tuple[int, float]]:
    key = f"eval/{EVALUATOR}/exact_match"
    return [(row.get("step", 0), row[key]) for row in _log_rows(output_dir) if key in row]


def _log_rows(output_dir: Path) -> list[dict]:
    log = output_dir / "trainer_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _eval_losses(output_dir: Path) -> list[float]:
    return [row["eval_loss"] for row in _log_rows(output_dir) if "eval_loss" in row]


def _train_losses(output_dir: Path) -> list[float]:
    return [row["loss"] for row in _log_rows(output_dir) if "loss" in row]


@contextlib.contextmanager
def _details_to(log_path: Path) -> Iterator[None]:
    """Send what a phase prints besides its progress bar to `log_path`: lmforge's INFO lines, the per-step
    console lines, transformers' metrics tables (stdout), and the bars of data and weight loading.

    Warnings and errors still reach the terminal; the training bar (`ConsoleCallback`, plain tqdm) stays.
    """
    import datasets
    from transformers.utils import logging as hf_logging

    from lmforge.train.callbacks.console import console_logger

    loggers = [logging.getLogger("lmforge"), console_logger()]
    terminal = [(handler, handler.level) for logger in loggers for handler in logger.handlers]
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(message)s"))
    bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    for handler, _ in terminal:
        handler.setLevel(logging.WARNING)
    for logger in loggers:
        logger.addHandler(to_file)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for logger in loggers:
            logger.removeHandler(to_file)
        to_file.close()
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(printed.getvalue())
        for handler, level in terminal:
            handler.setLevel(level)
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()


def _say(text: str) -> None:
    print(text, flush=True)


def _duration(seconds: float) -> str:
    from lmforge.train.callbacks.console import duration

    return duration(seconds)


def run_demo(root: Path, seed: int = 0, say: Callable[[str], None] = _say) -> DemoResult:
    from lmforge.config import load_config
    from lmforge.model.from_config import create_model
    from lmforge.train.stages import get_stage

    root.mkdir(parents=True, exist_ok=True)
    log_path = root / LOG_FILE
    log_path.write_text("", encoding="utf-8")
    base_dir = root / "base"

    def phase(number: int, name: str, what: str) -> float:
        say(f"[{number}/{PHASES}] {name:<10} {what}")
        return time.perf_counter()

    started = phase(1, "create", f"a fresh tiny-qwen2 (hidden {DEMO_MODEL_OVERRIDES['hidden_size']}) in {base_dir}, "
                                  "and the letter-shift data")
    with _details_to(log_path):
        if not (base_dir / "config.json").is_file():
            create_model("tiny-qwen2", base_dir, seed=seed, overrides=DEMO_MODEL_OVERRIDES)
        heldout = write_demo_data(root / "data", seed)
    pt_cfg, sft_cfg = demo_configs(root, base_dir, root / "data", seed)
    say(f"      done in {_duration(time.perf_counter() - started)}")
    paths = {}
    for name, cfg in (("pt", pt_cfg), ("sft", sft_cfg)):
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")

    started = phase(2, "pretrain", f"lmforge train {paths['pt']}  (stage pt on the letter corpus)")
    with _details_to(log_path):
        config = load_config(paths["pt"])
        get_stage(config.finetuning.stage)(config)
    losses = _train_losses(root / "pt")
    say(f"      done in {_duration(time.perf_counter() - started)}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    started = phase(3, "fine-tune", f"lmforge train {paths['sft']}  (stage sft on the instructions; in-loop "
                                     "evaluator: held-out exact match before the first step and at the end)")
    with _details_to(log_path):
        config = load_config(paths["sft"])
        get_stage(config.finetuning.stage)(config)
    losses = _eval_losses(root / "sft")
    scored = _evaluator_accuracies(root / "sft")
    before, after = scored[0][1], scored[-1][1]
    say(f"      done in {_duration(time.perf_counter() - started)}: eval loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"held-out exact match {before:.1%} (step {scored[0][0]}) -> {after:.1%} (step {scored[-1][0]})")

    started = phase(4, "evaluate", f"lmforge eval on the saved model {root / 'sft'} (the same task file)")
    with _details_to(log_path):
        standalone = standalone_accuracy(root / "sft", root / "data", root / "eval")
    say(f"      done in {_duration(time.perf_counter() - started)}: held-out exact match {standalone:.1%}")

    phase(5, "chat", "one held-out prompt through the chat engine (lmforge chat / lmforge api)")
    with _details_to(log_path):
        chat_config, prompt, answer = _chat_with(root, sft_cfg["default_system"], heldout[0]["instruction"])
    return DemoResult(before, after, standalone, losses[0], losses[-1], root / "pt", root / "sft", chat_config, prompt,
                      answer, write_check_config(root))


def write_check_config(root: Path) -> Path:
    """check.yaml for `lmforge check`: the fine-tuned model; its base (the pretrained model), template, system
    prompt and held-out samples (the SFT run's val_size split) come from its lmforge_run.json."""
    path = root / "check.yaml"
    check = {"model_name_or_path": str(root / "sft"), "check": {"output_dir": str(root / "check")}}
    path.write_text(yaml.safe_dump(check, sort_keys=False), encoding="utf-8")
    return path


def _chat_with(root: Path, system: str, prompt: str) -> tuple[Path, str, str]:
    """chat.yaml for the fine-tuned model, and its answer to `prompt` through the chat/api engine."""
    from lmforge.config import load_inference_config
    from lmforge.inference.engine import ChatEngine

    path = root / "chat.yaml"
    # The template is not repeated: chat and api read it from the run (lmforge_run.json in the model dir).
    chat = {"model_name_or_path": str(root / "sft"), "default_system": system, "do_sample": False,
            "max_new_tokens": 16}
    path.write_text(yaml.safe_dump(chat, sort_keys=False), encoding="utf-8")
    return path, prompt, ChatEngine(load_inference_config(path)).reply([{"role": "user", "content": prompt}])


def demo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/demo", type=Path)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args(argv)
    print(f"lmforge demo: pretrain a tiny model, then teach it to shift letters; details in "
          f"{args.output_dir / LOG_FILE}", flush=True)
    result = run_demo(args.output_dir, args.seed)
    print()
    print("lmforge demo: shift each letter by one (held-out sequences never seen in training)")
    print(f"  held-out exact-match accuracy  after pretraining: {result.accuracy_before:6.1%}  (in-loop evaluator, step 0)")
    print(f"  held-out exact-match accuracy  after SFT:         {result.accuracy_after:6.1%}  (in-loop evaluator, last "
          f"step; lmforge eval on the saved model: {result.accuracy_standalone:.1%})")
    print(f"  SFT eval loss  first eval: {result.sft_eval_loss_first:.3f}  last eval: {result.sft_eval_loss_last:.3f}")
    print(f"  models: {result.pt_dir} (pretrained), {result.sft_dir} (fine-tuned); plots: training_loss.png in each")
    print(f"  the fine-tuned model, asked through {result.chat_config}:")
    print(f"    User: {result.chat_prompt}")
    print(f"    Assistant: {result.chat_answer}")
    print()
    print("Talk to it:    lmforge chat " + str(result.chat_config))
    print("Serve it:      lmforge api " + str(result.chat_config) + "      # OpenAI API at http://127.0.0.1:8000/v1")
    if result.check_config is not None:
        print("Check it:      lmforge check " + str(result.check_config) + "    # verdicts; exit 1 when a probe fails")
    print("Ask the server:")
    body = json.dumps({"model": result.sft_dir.name, "messages": [{"role": "user", "content": result.chat_prompt}]})
    print(f"  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'")
    return 0
