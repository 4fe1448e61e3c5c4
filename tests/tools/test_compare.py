"""`lmforge compare` on two real tiny runs that differ in their learning rate: the table's figures are the logs',
the config diff names the key, the plot and the report are written."""

from __future__ import annotations

import json

import pytest
import yaml

from lmforge.cli import main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("compare")
    data = root / "data"
    data.mkdir()
    rows = [{"instruction": f"Count to {i}", "input": "", "output": " ".join(str(k) for k in range(1, i + 2))}
            for i in range(16)]
    (data / "counts.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"counts": {"file_name": "counts.json"}}))
    runs = []
    for lr in (1e-3, 1e-2):
        out = root / f"lr{lr:g}"
        config = root / f"lr{lr:g}.yaml"
        config.write_text(yaml.safe_dump({
            "model_name_or_path": str(tiny_model_dir), "stage": "sft", "finetuning_type": "lora", "template": "qwen",
            "dataset_dir": str(data), "dataset": "counts", "output_dir": str(out), "max_steps": 4,
            "per_device_train_batch_size": 4, "logging_steps": 1, "learning_rate": lr, "report_to": "none",
            "disable_tqdm": True, "eval_strategy": "steps", "eval_steps": 2, "val_size": 0.25}))
        assert main(["train", str(config)]) == 0
        runs.append(out)
    return runs


def test_table_diff_and_plot(two_runs, tmp_path, capsys):
    from lmforge.tools.compare import load_run, summary

    assert yaml.safe_load((two_runs[0] / "lmforge_config.yaml").read_text())["learning_rate"] == 1e-3
    capsys.readouterr()
    assert main(["compare", *map(str, two_runs), "--plot", str(tmp_path / "c.png"),
                 "--html", str(tmp_path / "c.html"), "--x", "tokens"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate: lr0.001=0.001, lr0.01=0.01" in out
    assert "max_steps" not in out.split("config keys that differ:")[1]  # the same in both: not a difference
    assert (tmp_path / "c.png").stat().st_size > 10_000
    report = (tmp_path / "c.html").read_text()
    assert "data:image/png;base64," in report and "<td>learning_rate</td>" in report

    runs = [load_run(path) for path in two_runs]
    table = summary(runs, ["loss", "eval_loss"])
    for run, row in zip(runs, table):
        losses = [r["loss"] for r in run.rows if "loss" in r]
        evals = [r["eval_loss"] for r in run.rows if "eval_loss" in r]
        assert len(losses) == 4 and len(evals) >= 2  # every 2 steps, and the final evaluation
        assert row["loss final"] == losses[-1] and row["loss best"] == min(losses)
        assert row["eval_loss final"] == evals[-1] and row["eval_loss best"] == min(evals)
        assert row["peak GiB"] == max(r["peak_rss_gib"] for r in run.rows) > 0.1  # torch alone holds > 100 MiB
        assert row["wall s"] == json.loads((run.path / "all_results.json").read_text())["train_runtime"]
    assert table[0]["loss final"] != table[1]["loss final"]


def test_bad_input_names_what_is_wrong(two_runs, tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no trainer_log.jsonl; is it the output_dir of an lmforge train run?" in capsys.readouterr().err
    assert main(["compare", str(two_runs[0]), "--metric", "accuracy"]) == 2
    assert "no run logged accuracy; logged: loss, eval_loss" in capsys.readouterr().err


def test_sweep_trains_each_variant_skips_finished_ones_and_compares(two_runs, tmp_path, capsys):
    base = yaml.safe_load((two_runs[0] / "lmforge_config.yaml").read_text())
    base.update(output_dir=str(tmp_path / "sweep"), max_steps=2, eval_strategy="no", val_size=0)
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    assert main(["sweep", str(config), "--grid", "learning_rate=0.001,0.01", "--grid", "lora_rank=4"]) == 0
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert names == ["learning_rate-0.001_lora_rank-4", "learning_rate-0.01_lora_rank-4"]
    for name, lr in zip(names, (0.001, 0.01)):
        ran = yaml.safe_load((tmp_path / "sweep" / name / "lmforge_config.yaml").read_text())
        assert ran["learning_rate"] == lr and ran["lora_rank"] == 4
    out = capsys.readouterr().out
    assert "learning_rate: learning_rate-0.001_lora_rank-4=0.001" in out and (tmp_path / "sweep" / "compare.png").exists()
    assert main(["sweep", str(config), "--grid", "learning_rate=0.001,0.01", "--grid", "lora_rank=4"]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2  # nothing trained again
    assert main(["sweep", str(config), "--grid", "learning_rate=0.001,fast"]) == 2  # checked before any run
    assert "variant learning_rate-fast: " in capsys.readouterr().err
