"""A stage is declared once, by its `Stage` spec: a stage defined in this file alone trains end to end.

Two toy stages, each registered here and removed again after its test (nothing outside this file changes):
  - `toy_sft`: sft's data kind and collator with its own run function built from the workflow helpers; on the
    same data and seed it must log exactly sft's losses, step for step;
  - `toy_answers`: a new data kind, `answers` (each record's last response as a document, every token
    trained), whose processor is registered here too.
Plus the errors: an unknown stage name (did-you-mean) and a data kind no processor handles.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import yaml

from lmforge.cli import main
from lmforge.data.collators import COLLATORS
from lmforge.data.processors import PROCESSORS, Processor
from lmforge.data.processors.tokenizing import rows
from lmforge.errors import ConfigError
from lmforge.stages import STAGES, Stage
from lmforge.train.stages import get_stage
from lmforge.train.workflow import (
    build_collator,
    build_trainer,
    load_conversation_data,
    load_training_model,
    train_and_save,
)
from lmforge.types import Conversation

CALLS: list[str] = []  # names of the toy run functions that ran, in order


def run_toy(cfg):
    """The run function of both toy stages: sft's recipe, every part picked by the stage's spec."""
    CALLS.append(cfg.finetuning.stage)
    tokenizer, template, data = load_conversation_data(cfg)
    model = load_training_model(cfg)
    trainer = build_trainer(cfg, model, tokenizer, data, build_collator(cfg, tokenizer))
    return train_and_save(trainer, cfg, tokenizer, template.name)


def tokenize_answers(convs, data_args, tokenizer, template, *, split, report, packs):
    """The `answers` data kind: each record's last response as a document ending in eos, every token labelled."""
    def encode_batch(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for row in rows(batch):
            ids = tokenizer(Conversation.from_dict(row).messages[-1].content, add_special_tokens=False)["input_ids"]
            ids = (ids + [tokenizer.eos_token_id])[: data_args.cutoff_len]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(list(ids))
        return out

    return convs.map(encode_batch, batched=True, remove_columns=convs.column_names, desc=f"answers {split}")


@contextmanager
def registered(registry, name, entry):
    registry.add(name, entry)
    try:
        yield entry
    finally:
        registry.unregister(name)


def write_cfg(tmp_path, model_dir, data_dir, name: str, **extra) -> str:
    keys = {
        "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "dataset": "numbers,chats",
        "template": "qwen", "output_dir": str(tmp_path / f"out_{name}"), "data_cache_dir": str(tmp_path / "cache"),
        "cutoff_len": 64, "per_device_train_batch_size": 8, "learning_rate": 1.0e-2, "max_steps": 8,
        "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True, "seed": 0, "finetuning_type": "lora",
    }
    keys.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def logged(tmp_path, name: str) -> list[dict]:
    lines = (tmp_path / f"out_{name}" / "trainer_log.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def test_builtin_specs_resolve_to_their_run_function_processor_and_collator():
    assert list(STAGES)[:5] == ["pt", "sft", "rm", "dpo", "kto"]
    for name in ("pt", "sft", "rm", "dpo", "kto"):
        spec = STAGES.get(name)
        assert get_stage(name).__name__ == f"run_{name}"
        assert spec.data_kind in PROCESSORS and spec.collator in COLLATORS
    assert [STAGES.get(n).data_kind for n in ("pt", "sft", "rm", "dpo", "kto")] == [
        "text", "conversation", "pairwise", "pairwise", "feedback"]


def test_a_stage_defined_in_a_test_trains_exactly_like_sft(tmp_path, tiny_model_dir, data_dir):
    toy = Stage("toy_sft", run_toy, data_kind="conversation", collator="conversation", can_pack=True,
                isolates_packed=True, token_loss=True)
    assert main(["train", write_cfg(tmp_path, tiny_model_dir, data_dir, "sft", stage="sft")]) == 0
    CALLS.clear()
    with registered(STAGES, "toy_sft", toy):
        assert main(["train", write_cfg(tmp_path, tiny_model_dir, data_dir, "toy", stage="toy_sft")]) == 0
    assert CALLS == ["toy_sft"] and "toy_sft" not in STAGES

    sft, toy_rows = logged(tmp_path, "sft"), logged(tmp_path, "toy")
    assert [r["step"] for r in toy_rows] == list(range(1, 9))
    # Same tokens, same collator, same trainer: the same losses to the last bit.
    assert [r["loss"] for r in toy_rows] == [r["loss"] for r in sft]
    assert toy_rows[-1]["loss"] < toy_rows[0]["loss"] - 0.5  # 6.957 -> 6.269 in 8 steps
    assert all("perplexity" in r for r in toy_rows)  # token_loss: exp(loss) is logged
    info = json.loads((tmp_path / "out_toy" / "lmforge_run.json").read_text())
    assert info["stage"] == "toy_sft"


def test_a_stage_with_a_new_data_kind_trains_on_its_own_processor(tmp_path, tiny_model_dir, data_dir):
    from transformers import AutoTokenizer

    toy = Stage("toy_answers", run_toy, data_kind="answers", collator="text")  # token_loss False: no perplexity
    CALLS.clear()
    with registered(PROCESSORS, "answers", Processor("answers", tokenize_answers)), \
            registered(STAGES, "toy_answers", toy):
        cfg = write_cfg(tmp_path, tiny_model_dir, data_dir, "answers", stage="toy_answers", dataset="numbers",
                        max_steps=10, learning_rate=5.0e-3, finetuning_type="full")
        assert main(["train", cfg]) == 0
    assert CALLS == ["toy_answers"]

    losses = [r["loss"] for r in logged(tmp_path, "answers")]
    assert len(losses) == 10 and not any("perplexity" in r for r in logged(tmp_path, "answers"))
    # Every token of "The number is 7." is trained on and the answers differ only in the number: the loss
    # falls fast (6.94 -> 4.01 in ten full-finetuning steps).
    assert losses[-1] < 0.65 * losses[0]
    # The processor's rows: the answer and eos, nothing of the prompt.
    from lmforge.data.pipeline import build_datasets
    from lmforge.config import load_config

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with registered(PROCESSORS, "answers", Processor("answers", tokenize_answers)), \
            registered(STAGES, "toy_answers", toy):
        data = build_datasets(load_config(cfg).data, "toy_answers", tokenizer, None, seed=0)
    assert len(data.train) == 40
    assert tokenizer.decode(data.train[3]["input_ids"]) == "The number is 3." + tokenizer.eos_token
    assert data.train[3]["labels"] == data.train[3]["input_ids"]


def test_an_unknown_stage_name_suggests_the_close_one(tmp_path, tiny_model_dir, data_dir, capsys):
    with pytest.raises(ConfigError, match=r"unknown stage 'sfr' \(did you mean 'sft'\?\); choose one of: dpo, grpo, kto, ppo"):
        get_stage("sfr")
    assert main(["train", write_cfg(tmp_path, tiny_model_dir, data_dir, "typo", stage="dpp")]) != 0
    assert "stage: 'dpp' is not one of pt, sft, rm, dpo, kto, grpo, ppo (did you mean 'dpo'?)" in capsys.readouterr().err


def test_a_data_kind_without_a_processor_is_an_error_never_sft(tmp_path, tiny_model_dir, data_dir, capsys):
    for kind, hint in (("tabular", ""), ("pairwse", " (did you mean 'pairwise'?)")):
        with registered(STAGES, "toy_kind", Stage("toy_kind", run_toy, data_kind=kind, collator="conversation")):
            assert main(["train", write_cfg(tmp_path, tiny_model_dir, data_dir, kind, stage="toy_kind")]) != 0
        err = capsys.readouterr().err
        assert (f"stage 'toy_kind' reads data kind '{kind}', which no processor handles{hint}; known data kinds: "
                "conversation, feedback, pairwise, prompt, text") in err
        assert not (tmp_path / f"out_{kind}" / "trainer_log.jsonl").exists()
