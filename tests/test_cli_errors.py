"""User errors exit non-zero with one clear message naming the file, line or key, and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from lmforge.cli import main


def run_train(tmp_path, capsys, model_dir, data_dir, **keys):
    cfg = {
        "model_name_or_path": str(model_dir),
        "dataset_dir": str(data_dir),
        "dataset": "numbers",
        "template": "qwen",
        "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"),
        "max_steps": 1,
        "disable_tqdm": True,
    }
    cfg.update(keys)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", str(path)])
    err = capsys.readouterr().err
    return code, err


def assert_one_clear_message(err: str, *fragments: str):
    lines = [line for line in err.splitlines() if line.startswith("lmforge: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_model_path(tmp_path, capsys, data_dir):
    code, err = run_train(tmp_path, capsys, tmp_path / "no-such-model", data_dir)
    assert code != 0
    assert_one_clear_message(err, "no-such-model", "model_name_or_path")


def test_malformed_json_line(tmp_path, capsys, tiny_model_dir, data_dir):
    lines = [json.dumps({"instruction": "a", "output": "b"})] * 3 + ['{"instruction": "c", "output": ']
    (data_dir / "broken.jsonl").write_text("\n".join(lines) + "\n")
    code, err = run_train(tmp_path, capsys, tiny_model_dir, data_dir, dataset=str(data_dir / "broken.jsonl"))
    assert code != 0
    assert_one_clear_message(err, "broken.jsonl", "line 4")


def test_missing_column(tmp_path, capsys, tiny_model_dir, data_dir):
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["numbers"]["columns"] = {"prompt": "instruction", "response": "answer"}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    code, err = run_train(tmp_path, capsys, tiny_model_dir, data_dir)
    assert code != 0
    assert_one_clear_message(err, "numbers", "answer")


def test_unknown_template(tmp_path, capsys, tiny_model_dir, data_dir):
    code, err = run_train(tmp_path, capsys, tiny_model_dir, data_dir, template="qwne")
    assert code == 2
    assert_one_clear_message(err, "qwne", "did you mean 'qwen'?")


def test_template_tokenizer_cannot_serve(tmp_path, capsys, tiny_model_dir, data_dir):
    code, err = run_train(tmp_path, capsys, tiny_model_dir, data_dir, template="llama3")
    assert code == 2
    assert_one_clear_message(err, "template", "<|start_header_id|>")


def test_lora_target_module_model_lacks(tmp_path, capsys, tiny_model_dir, data_dir):
    code, err = run_train(tmp_path, capsys, tiny_model_dir, data_dir, finetuning_type="lora", lora_target="q_prj")
    assert code == 2
    assert_one_clear_message(err, "lora_target", "did you mean 'q_proj'?")


def test_unknown_key_exit_code_from_a_real_process(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model_name_or_path: m\ndataset: d\noutput_dir: o\nlora_rnak: 4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "train", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"lmforge: error: {path}: unknown key 'lora_rnak' (did you mean 'lora_rank'?)"
    )
    assert "Traceback" not in proc.stderr


def test_unknown_command():
    assert main(["trian"]) == 2
