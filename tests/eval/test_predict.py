"""do_predict + predict_with_generate: batched left-padded generation equals one-at-a-time chat, the files and
scores LLaMA-Factory writes, prompt truncation that keeps the assistant header, and config errors."""

from __future__ import annotations

import json

import pytest
import yaml

from lmforge.cli import main
from lmforge.config import load_inference_config
from lmforge.data.processors.generation import encode_for_generation
from lmforge.data.templates import get_template
from lmforge.eval.text_metrics import similarity_scores
from lmforge.inference.engine import ChatEngine
from lmforge.model.tokenizer import load_tokenizer
from lmforge.config.model_args import ModelArguments
from lmforge.types import Conversation, Message, Role

FACTS = {"apple": "red", "leaf": "green", "sky": "blue", "sun": "yellow", "snow": "white", "coal": "black",
         "orange": "orange", "grape": "purple", "rose": "pink", "sand": "beige", "cloud": "grey", "ocean": "teal"}


@pytest.fixture
def colours(tmp_path):
    # prompts of four lengths, so batches of 8 mix lengths and need left padding
    records = [{"instruction": f"What colour is the {thing}?" + " Please answer." * (i % 4), "input": "",
                "output": f"The {thing} is {colour}."} for i, (thing, colour) in enumerate(FACTS.items())]
    root = tmp_path / "data"
    root.mkdir()
    (root / "colours.json").write_text(json.dumps(records))
    (root / "dataset_info.json").write_text(json.dumps({"colours": {"file_name": "colours.json"}}))
    return root, records


def config(tmp_path, model_dir, data_dir, **keys) -> str:
    cfg = {"model_name_or_path": str(model_dir), "stage": "sft", "finetuning_type": "full",
           "dataset_dir": str(data_dir), "dataset": "colours", "eval_dataset": "colours", "template": "qwen",
           "default_system": "Be brief.", "cutoff_len": 64, "output_dir": str(tmp_path / "out"),
           "overwrite_output_dir": True, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "max_steps": 200,
           "lr_scheduler_type": "constant", "logging_steps": 50, "disable_tqdm": True, "do_predict": True,
           "predict_with_generate": True, "do_sample": False, "max_new_tokens": 12,
           "per_device_eval_batch_size": 8, "data_cache_dir": str(tmp_path / "cache"), **keys}
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def read_predictions(out) -> list[dict]:
    return [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]


def test_train_then_predict_writes_scored_predictions_equal_to_chat(tmp_path, tiny_model_dir, colours):
    data_dir, records = colours
    out = tmp_path / "out"
    # before training: the random model answers nothing useful
    assert main(["train", config(tmp_path, tiny_model_dir, data_dir, do_train=False)]) == 0
    before = json.loads((out / "predict_results.json").read_text())
    assert before["predict_rouge-1"] < 20 and before["predict_samples"] == 12

    assert main(["train", config(tmp_path, tiny_model_dir, data_dir, do_train=True)]) == 0
    results = json.loads((out / "predict_results.json").read_text())
    rows = read_predictions(out)
    assert [r["label"] for r in rows] == [r["output"] for r in records]  # dataset order
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") and "Be brief." in r["prompt"] for r in rows)
    assert len({r["predict"] for r in rows}) >= 6  # answers depend on the prompt

    recomputed = similarity_scores([r["predict"] for r in rows], [r["label"] for r in rows])
    for key, value in recomputed.items():
        assert results[f"predict_{key}"] == pytest.approx(value, abs=1e-9)
    assert results["predict_rouge-1"] > 60 and results["predict_bleu-4"] > before["predict_bleu-4"] + 30
    assert results["predict_truncated"] == 0 and results["predict_samples_per_second"] > 0

    # batched, left-padded generation gives the answers chat gives one prompt at a time
    engine = ChatEngine(load_inference_config(config(tmp_path, out, data_dir)))
    alone = [engine.reply([{"role": "user", "content": r["instruction"]}], max_new_tokens=12) for r in records]
    assert [r["predict"] for r in rows] == [a.strip() for a in alone]


def test_prompt_truncation_keeps_the_assistant_header(tiny_model_dir):
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    template = get_template("qwen", tokenizer)
    conv = Conversation([Message(Role.USER, "word " * 200), Message(Role.ASSISTANT, "short answer")])
    full = template.encode_prompt(tokenizer, Conversation(conv.messages[:1]))
    encoded = encode_for_generation(conv, template, tokenizer, cutoff_len=64)
    response = len(encoded["labels"])
    assert encoded["truncated"] and len(encoded["input_ids"]) + response == 64
    assert encoded["input_ids"] == full[-(64 - response):]  # the end survives: "<|im_start|>assistant\n"
    assert encoded["reference"] == "short answer"
    kept = encode_for_generation(Conversation([Message(Role.USER, "hi"), Message(Role.ASSISTANT, "ok")]),
                                 template, tokenizer, cutoff_len=64)
    assert not kept["truncated"] and kept["input_ids"] == template.encode_prompt(
        tokenizer, Conversation([Message(Role.USER, "hi")]))


@pytest.mark.parametrize(("keys", "message"), [
    ({"predict_with_generate": False}, "predict_with_generate"),
    ({"stage": "dpo"}, "do_predict"),
    ({"eval_dataset": None, "do_train": True}, "eval_dataset"),
])
def test_predict_config_errors_name_the_key(tmp_path, tiny_model_dir, colours, capsys, keys, message):
    data_dir, _ = colours
    assert main(["train", config(tmp_path, tiny_model_dir, data_dir, **keys)]) == 2
    assert message in capsys.readouterr().err


def test_a_config_with_only_do_predict_is_predict_only(tmp_path, tiny_model_dir, colours, caplog):
    """LLaMA-Factory's nlg_eval YAML: do_predict, eval_dataset, no dataset, no do_train: predicts, never trains."""
    data_dir, records = colours
    keys = {"model_name_or_path": str(tiny_model_dir), "stage": "sft", "do_predict": True, "finetuning_type": "full",
            "eval_dataset": "colours", "dataset_dir": str(data_dir), "template": "qwen", "cutoff_len": 64,
            "max_samples": 50, "output_dir": str(tmp_path / "predict"), "overwrite_output_dir": True,
            "report_to": "none", "per_device_eval_batch_size": 4, "predict_with_generate": True,
            "max_new_tokens": 4, "ddp_timeout": 180000000, "data_cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "llama3_lora_predict.yaml"
    path.write_text(yaml.safe_dump(keys))
    assert main(["train", str(path)]) == 0
    out = tmp_path / "predict"
    assert len(read_predictions(out)) == len(records) == 12
    assert not (out / "trainer_log.jsonl").exists() and not (out / "model.safetensors").exists()  # nothing trained
    assert "predict-only run: nothing is trained" in caplog.text
