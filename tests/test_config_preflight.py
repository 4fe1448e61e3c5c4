"""Config errors are complete, precise and fast: reported before torch or transformers is imported.

Every unknown key at once (a suggestion only when genuinely close), LLaMA-Factory options named as such,
every numeric key range-checked, wrong shapes named by key, unreadable files named, accepted-but-unused keys
and LLaMA-Factory environment switches reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config.compat import unhonoured_settings
from lmforge.config.loader import load_config, read_config_file

BASE = {"model_name_or_path": "models/tiny", "stage": "sft", "dataset": "qa", "dataset_dir": "data",
        "output_dir": "out", "finetuning_type": "lora"}


def write(tmp_path: Path, **keys) -> str:
    model = tmp_path / "models" / "tiny"  # the path must exist; nothing is loaded from it by these checks
    model.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model_name_or_path": str(model), **keys}))
    return str(path)


def error_of(tmp_path, capsys, **keys) -> str:
    assert main(["train", write(tmp_path, **keys)]) == 2
    return capsys.readouterr().err


def test_the_training_key_snapshot_matches_the_installed_transformers():
    from lmforge.config.training_args import describe_training_fields
    from lmforge.config.training_fields import training_fields

    def checked(snapshot: dict) -> dict:
        # What the checks read (names, kinds, choices, defaults, ownership) must match exactly; the wording of
        # transformers' own help text may drift between releases (it only feeds --help).
        fields = {name: {k: v for k, v in spec.items() if k != "help" or spec["lmforge"]}
                  for name, spec in snapshot["fields"].items()}
        return {**snapshot, "fields": fields}

    assert checked(json.loads(json.dumps(describe_training_fields()))) == checked(training_fields()), (
        "transformers' TrainingArguments changed: regenerate with `python -m lmforge.config.training_args`")


@pytest.mark.parametrize("keys", [
    {"lora_rnak": 8},
    {"learning_rate": -1},
    {"gradient_accumulation_steps": 0},
    {"placeholders": "abc"},
    {"use_unsloth": True},
    {"output_dir": "a_file"},
])
def test_config_errors_come_before_torch_and_transformers_are_imported(tmp_path, keys):
    (tmp_path / "a_file").write_text("x")
    config = write(tmp_path, **keys)
    code = ("import sys; from lmforge.cli import main; rc = main(['train', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, config], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert done.stderr.startswith("lmforge: error:") and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["data", "validate"], ["data", "stats"], ["data", "preview"], ["chat"], ["api"],
                                     ["export"]])
def test_every_command_reports_config_errors_before_torch(tmp_path, command):
    config = write(tmp_path, lora_rnak=8)
    code = ("import sys; from lmforge.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *command, config], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert "unknown key 'lora_rnak' (did you mean 'lora_rank'?)" in done.stderr


def test_every_unknown_key_is_reported_at_once_with_only_close_suggestions(tmp_path, capsys):
    err = error_of(tmp_path, capsys, use_unsloth=True, fp8=True, ray_num_workers=4, lora_rnak=8,
                   completely_made_up=1)
    assert "5 keys are not accepted" in err
    assert "LLaMA-Factory's Unsloth option ('use_unsloth') is not supported" in err
    assert "LLaMA-Factory's FP8 training option ('fp8') is not supported" in err
    assert "LLaMA-Factory's Ray option ('ray_num_workers') is not supported" in err
    assert "lmforge launches with torchrun" in err  # the reason, from llamafactory_keys.REASONS
    assert "unknown key 'lora_rnak' (did you mean 'lora_rank'?)" in err
    assert "unknown key 'completely_made_up'\n" in err or err.rstrip().endswith("unknown key 'completely_made_up'")
    for wrong in ("use_rslora", "use_cpu", "dataloader_num_workers"):  # what difflib used to offer
        assert wrong not in err


def test_llamafactory_keys_left_at_their_default_are_accepted(tmp_path):
    cfg = load_config(write(tmp_path, use_galore=False, use_unsloth=False, quantization_bit=None,
                            upcast_layernorm=False, ddp_timeout=180000000))
    assert cfg.training.ddp_timeout == 180000000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("learning_rate", 0, "'learning_rate' must be > 0, got 0"),
    ("per_device_train_batch_size", 0, "'per_device_train_batch_size' must be >= 1, got 0"),
    ("per_device_eval_batch_size", -2, "'per_device_eval_batch_size' must be >= 1"),
    ("gradient_accumulation_steps", 0, "'gradient_accumulation_steps' must be >= 1, got 0"),
    ("lora_dropout", 1.0, "'lora_dropout' must be in [0, 1), got 1.0"),
    ("lora_dropout", -0.1, "'lora_dropout' must be in [0, 1)"),
    ("lora_alpha", -16, "'lora_alpha' must be > 0, got -16"),
    ("lora_rank", 0, "'lora_rank' must be >= 1"),
    ("save_steps", -5, "'save_steps' must be > 0"),
    ("logging_steps", 0, "'logging_steps' must be > 0"),
    ("warmup_ratio", 1.5, "'warmup_ratio' must be in [0, 1], got 1.5"),
    ("num_train_epochs", 0, "'num_train_epochs' must be > 0"),
    ("max_steps", 0, "'max_steps' must be >= 1, got 0"),
    ("max_samples", 0, "'max_samples' must be >= 1, got 0"),
    ("max_samples", -3, "'max_samples' must be >= 1, got -3"),
    ("cutoff_len", 1, "'cutoff_len' must be >= 2"),
    ("weight_decay", -0.1, "'weight_decay' must be >= 0"),
    ("adam_beta2", 1.0, "'adam_beta2' must be in [0, 1)"),
    ("top_p", 0, "'top_p' must be in (0, 1]"),
    ("temperature", -1, "'temperature' must be >= 0"),
    ("dpo_label_smoothing", 0.5, "'dpo_label_smoothing' must be in [0, 0.5)"),
    ("pref_beta", 0, "'pref_beta' must be > 0"),
    ("val_size", -1, "'val_size' must be >= 0"),
    ("seed", -1, "'seed' must be >= 0"),
    ("learning_rate", float("nan"), "'learning_rate' must be > 0, got nan"),
])
def test_numeric_keys_are_range_checked_by_name(tmp_path, capsys, key, value, message):
    assert message in error_of(tmp_path, capsys, **{key: value})


def test_max_steps_minus_one_means_no_limit(tmp_path):
    assert load_config(write(tmp_path, max_steps=-1)).training.max_steps == -1


def test_several_values_out_of_range_are_listed_together(tmp_path, capsys):
    err = error_of(tmp_path, capsys, learning_rate=-1, gradient_accumulation_steps=0, lora_dropout=1.0)
    assert "3 values are out of range" in err and err.count("must be") == 3


@pytest.mark.parametrize(("keys", "message"), [
    ({"placeholders": "abc"}, "key 'placeholders' expects mapping, got 'abc'"),
    ({"template": ["qwen", "llama3"]}, "key 'template' expects str"),
    ({"learning_rate": {"peak": 1}}, "key 'learning_rate' expects float, got a mapping"),
    ({"interleave_probs": "0.5,x", "mix_strategy": "interleave_under", "dataset": "a,b"},
     "'interleave_probs' must be comma-separated numbers"),
    ({"interleave_probs": "0.5,1.5", "mix_strategy": "interleave_under", "dataset": "a,b"},
     "'interleave_probs' are probabilities in [0, 1]"),
    ({"report_to": "wandbb"}, "report_to: 'wandbb' is not one of"),
    ({"report_to": ["tensorboard", "nope"]}, "report_to: 'nope' is not one of"),
    ({"eval_strategy": "step"}, "eval_strategy: 'step' is not one of no, steps, epoch (did you mean 'steps'?)"),
    ({"lr_scheduler_type": "cosin"}, "did you mean 'cosine'?"),
    ({"num_train_epochs": "three"}, "key 'num_train_epochs' expects float, got 'three'"),
])
def test_wrongly_typed_values_are_named_by_key(tmp_path, capsys, keys, message):
    assert message in error_of(tmp_path, capsys, **keys)


def test_an_output_dir_that_is_a_file_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a directory")
    assert "output_dir: " in error_of(tmp_path, capsys, output_dir=str(tmp_path / "taken"))
    assert "is a file" in error_of(tmp_path, capsys, output_dir=str(tmp_path / "taken" / "run"))


@pytest.mark.parametrize(("content", "message"), [
    (b"model_name_or_path: \xff\xfe broken\n", "not UTF-8 text (byte 0xff at offset 20)"),
    (b"\x00\x01\x02\x03binary" * 10, "binary data"),
    (b"model_name_or_path: m\nlearning_rate: [1, 2\n", "not valid YAML"),
    (b"- a\n- b\n", "the top level must be a mapping"),
    (b"1: x\n", "keys must be names"),
])
def test_unreadable_config_files_are_named(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_utf16_and_bom_configs_are_read(tmp_path):
    text = yaml.safe_dump({**BASE, "default_system": "Réponds brièvement."})
    for encoding in ("utf-16", "utf-8-sig"):
        path = tmp_path / f"{encoding}.yaml"
        path.write_bytes(text.encode(encoding))
        assert read_config_file(path)["default_system"] == "Réponds brièvement."
    assert main(["train", str(tmp_path)]) == 2  # a directory


def test_accepted_but_unused_keys_and_llamafactory_switches_are_reported():
    notes = unhonoured_settings({"infer_backend": "vllm", "export_device": "auto", "cache_dir": None},
                                {"USE_RAY": "1", "USE_V1": "0", "ALLOW_EXTRA_ARGS": "true", "NPROC_PER_NODE": "2"})
    assert len(notes) == 4, notes
    assert "'infer_backend: vllm' is accepted for LLaMA-Factory configs but has no effect" in notes[0]
    assert "export_device" in notes[1]
    assert "USE_RAY=1 is LLaMA-Factory's switch for training on a Ray cluster; lmforge does not honour it" in notes[2]
    assert "ALLOW_EXTRA_ARGS" in notes[3]
    assert unhonoured_settings({"infer_backend": "huggingface", "export_device": "cpu"}, {}) == []


def test_unused_settings_are_logged_when_a_config_loads(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("USE_V1", "1")
    load_config(write(tmp_path, infer_backend="vllm"))
    assert "'infer_backend: vllm' is accepted" in caplog.text and "USE_V1=1" in caplog.text
