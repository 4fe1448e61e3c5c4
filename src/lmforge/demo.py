"""`lmforge demo`: the whole pipeline on a task a tiny model can learn on a laptop CPU (73 s on 2 idle cores).

    lmforge demo --output-dir runs/demo

1. create a fresh tiny model and tokenizer (`create-model tiny-qwen2`, hidden size 128);
2. write a corpus of 4-letter sequences and their shifts (each letter moved one on: a->b, z->a), and an
   alpaca-format SFT set asking "Shift each letter by one: k t p a" -> "Shifted: l u q b", with a held-out
   set of sequences never seen in training;
3. pretrain (`stage: pt`) on the corpus, then fine-tune (`stage: sft`) on the instructions, each from a
   YAML written into the output dir and run exactly as `lmforge train` would;
4. print held-out greedy exact-match accuracy after pretraining (before SFT) and after SFT, and the
   eval losses;
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


@dataclass
class DemoResult:
    accuracy_before: float
    accuracy_after: float
    sft_eval_loss_first: float
    sft_eval_loss_last: float
    pt_dir: Path
    sft_dir: Path
    chat_config: Path
    chat_prompt: str
    chat_answer: str


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
    return held


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
        "per_device_eval_batch_size": 64,
        "output_dir": str(root / "sft"),
        "per_device_train_batch_size": 32,
        "learning_rate": 1.0e-3,
        # 6 epochs reached 62% at seed 0 (the map is learnt late, in a jump); 8 reached 91% (seed 2: 95%) and
        # reach 99% since the templates encode prompt and response apart (issue 16; measured, cause not isolated).
        "num_train_epochs": 8,
    }
    return pt, sft


def heldout_accuracy(model_dir: Path, template_name: str, heldout: list[dict], system: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.data.templates import get_template
    from lmforge.eval.greedy import exact_match_accuracy, greedy_replies
    from lmforge.types import Conversation, Message, Role

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    template = get_template(template_name, tokenizer)
    prompts = [Conversation([Message(Role.USER, r["instruction"])], system=system) for r in heldout]
    replies = greedy_replies(model, tokenizer, template, prompts, max_new_tokens=16, progress="answer")
    return exact_match_accuracy(replies, [r["output"] for r in heldout])


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

    phase(3, "evaluate", "held-out greedy answers of the pretrained model")
    with _details_to(log_path):
        before = heldout_accuracy(root / "pt", sft_cfg["template"], heldout, sft_cfg["default_system"])
    say(f"      exact match: {before:.1%}")

    started = phase(4, "fine-tune", f"lmforge train {paths['sft']}  (stage sft on the instructions)")
    with _details_to(log_path):
        config = load_config(paths["sft"])
        get_stage(config.finetuning.stage)(config)
    losses = _eval_losses(root / "sft")
    say(f"      done in {_duration(time.perf_counter() - started)}: eval loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    phase(5, "evaluate", "held-out greedy answers of the fine-tuned model, one through the chat engine")
    with _details_to(log_path):
        after = heldout_accuracy(root / "sft", sft_cfg["template"], heldout, sft_cfg["default_system"])
        chat_config, prompt, answer = _chat_with(root, sft_cfg["default_system"], heldout[0]["instruction"])
    say(f"      exact match: {after:.1%}")
    return DemoResult(before, after, losses[0], losses[-1], root / "pt", root / "sft", chat_config, prompt, answer)


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
    print(f"  held-out exact-match accuracy  after pretraining: {result.accuracy_before:6.1%}")
    print(f"  held-out exact-match accuracy  after SFT:         {result.accuracy_after:6.1%}")
    print(f"  SFT eval loss  first eval: {result.sft_eval_loss_first:.3f}  last eval: {result.sft_eval_loss_last:.3f}")
    print(f"  models: {result.pt_dir} (pretrained), {result.sft_dir} (fine-tuned); plots: training_loss.png in each")
    print(f"  the fine-tuned model, asked through {result.chat_config}:")
    print(f"    User: {result.chat_prompt}")
    print(f"    Assistant: {result.chat_answer}")
    print()
    print("Talk to it:    lmforge chat " + str(result.chat_config))
    print("Serve it:      lmforge api " + str(result.chat_config) + "      # OpenAI API at http://127.0.0.1:8000/v1")
    print("Ask the server:")
    body = json.dumps({"model": result.sft_dir.name, "messages": [{"role": "user", "content": result.chat_prompt}]})
    print(f"  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'")
    return 0
