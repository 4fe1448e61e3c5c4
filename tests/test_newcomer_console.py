"""What a newcomer reads first: usage errors, a mistyped model path, and chat's quiet start."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
import yaml

from lmforge.cli import main

PROBE = ("import sys; from lmforge.cli import main; rc = main(sys.argv[1:]); "
         "print(rc, 'torch' in sys.modules, file=sys.stdout)")


def run_cli(cwd, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", ["train", "chat", "export"])
def test_a_missing_relative_model_path_is_a_config_error_before_torch(tmp_path, command):
    # no models/ directory either: `models/` is where models are kept, not a hub organisation
    keys = {"model_name_or_path": "models/nope", "export_dir": "out"}
    if command == "train":
        keys.update(stage="sft", dataset="d", output_dir="out")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(keys))
    done = run_cli(tmp_path, command, "cfg.yaml")
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr == (f"lmforge: error: model_name_or_path: models/nope does not exist (relative to {tmp_path}); "
                           "lmforge loads local model directories only; check the path, or make a small random model "
                           "with `lmforge create-model tiny-qwen2 models/nope`\n")


def test_a_hub_id_says_models_are_local_and_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: the id is not there
    (tmp_path / "chat.yaml").write_text("model_name_or_path: Qwen/Qwen2-0.5B\n")
    assert main(["chat", str(tmp_path / "chat.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"is not in the Hugging Face cache ({tmp_path / 'hub' / 'models--Qwen--Qwen2-0.5B'})" in err
    assert "lmforge does not download: run `huggingface-cli download Qwen/Qwen2-0.5B`" in err
    (tmp_path / "mine").mkdir()  # an existing first directory: a path, not a hub id
    assert main(["chat", str(tmp_path / "chat.yaml"), "model_name_or_path=mine/nope"]) == 2
    assert "huggingface-cli" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["chat", "api", "export", "train"])
def test_usage_without_arguments_asks_for_the_config_only(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"lmforge {command}: error: the following arguments are required: config"


def test_chat_prints_nothing_about_trainable_parameters(tmp_path, tiny_model_dir, capfd, monkeypatch):
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "template": "qwen",
                                   "do_sample": False, "max_new_tokens": 2}))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\nexit\n"))
    assert main(["chat", str(cfg)]) == 0
    out, err = capfd.readouterr()
    assert "lmforge chat:" in out
    assert "trainable" not in out + err and "FutureWarning" not in err


def test_the_api_engine_prints_nothing_about_trainable_parameters(tmp_path, tiny_model_dir, capfd):
    from lmforge.config import load_inference_config
    from lmforge.inference.engine import ChatEngine

    cfg = tmp_path / "api.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "template": "qwen"}))
    ChatEngine(load_inference_config(cfg))  # what `lmforge api` builds before it serves
    out, err = capfd.readouterr()
    assert "trainable" not in out + err


def test_tokenize_shows_a_bar_with_eta_over_the_input_bytes(tmp_path, tiny_model_dir, capfd):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": "document {i} about letters"}}\n' for i in range(300)) + "\n\n")
    assert main(["tokenize", str(corpus), "--tokenizer", str(tiny_model_dir), "--output", str(tmp_path / "shards"),
                 "--workers", "1", "--batch-size", "64"]) == 0
    err = capfd.readouterr().err
    size = f"{corpus.stat().st_size / 1024:.1f}k"  # the whole file, blank lines at its end included
    assert re.search(rf"tokenizing: 100%\|.*\| {size}/{size} \[\d\d:\d\d<00:00, .*tokens, 300 docs\]", err), err


def test_predict_generation_shows_a_bar_with_eta(tiny_model_dir, capfd):
    from transformers import AutoModelForCausalLM

    from lmforge.eval.predict import generate_answers
    from lmforge.inference.batching import SamplingParams

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    capfd.readouterr()
    quiet = generate_answers(model, prompts, SamplingParams(max_tokens=2), 3)
    assert "%|" not in capfd.readouterr().err
    shown = generate_answers(model, prompts, SamplingParams(max_tokens=2), 3, progress="predict")
    assert shown == quiet
    assert re.search(r"predict: 100%\|.*\| 4/4 \[\d\d:\d\d<00:00", capfd.readouterr().err)


def test_the_demo_keeps_a_phase_s_details_in_its_log(tmp_path, capfd):
    import logging

    from lmforge.demo import _details_to
    from lmforge.logging import get_logger
    from lmforge.train.callbacks.console import console_logger

    log = tmp_path / "demo.log"
    with _details_to(log):
        get_logger("lmforge.demo_test").info("dataset 'x': 3 samples")
        console_logger().info("step    20/198  loss 4.7662")
        print("***** all metrics *****")
        get_logger("lmforge.demo_test").warning("something the user must see")
    out, err = capfd.readouterr()
    assert "dataset 'x'" not in err and "loss 4.7662" not in err and "all metrics" not in out
    assert "something the user must see" in err
    assert log.read_text().splitlines() == ["dataset 'x': 3 samples", "step    20/198  loss 4.7662",
                                            "something the user must see", "***** all metrics *****"]
    get_logger("lmforge.demo_test").info("after the phase, lines reach the terminal again")
    assert "after the phase" in capfd.readouterr().err
    assert logging.getLogger("lmforge").handlers and "after the phase" not in log.read_text()
