"""What `lmforge train` prints: aligned lines with units above a progress bar, not transformers' log dicts."""

from __future__ import annotations

import json
import re

import yaml

from lmforge.cli import main
from lmforge.train.callbacks.console import duration, format_eval_line, format_summary_line, format_train_line


def test_a_training_log_is_one_aligned_line_with_units():
    logs = {"loss": 2.34123, "grad_norm": 0.93, "learning_rate": 1e-4, "perplexity": 10.39, "grad_clip_rate": 0.25,
            "epoch": 0.5, "throughput/tokens_per_s": 12345.6, "throughput/mfu": 0.0421, "throughput/tokens_total": 9,
            "rewards/margins": 0.5}
    line = format_train_line(logs, 20, 100, eta_s=72)
    assert line == ("step    20/100  loss 2.3412  lr 1.00e-04  grad_norm 0.93   ppl 10.39    clipped  25%  "
                    "rewards/margins 0.5  epoch 0.50     12,346 tok/s  mfu  4.2%  eta 1m12s")
    # the same columns start at the same place on the next line
    later = format_train_line({**logs, "loss": 0.5, "throughput/tokens_per_s": 9.0}, 100, 100, eta_s=0)
    assert later.index("loss") == line.index("loss") and later.index("tok/s") == line.index("tok/s")


def test_eval_and_summary_lines():
    assert format_eval_line({"eval_loss": 1.11, "eval_perplexity": 3.0346, "eval_runtime": 0.112,
                             "eval_samples_per_second": 1783.2, "eval_steps_per_second": 35.7, "epoch": 1.0},
                            50, 700) == "step    50/700  eval_loss 1.1100  eval_ppl 3.035  0.11 s  1,783 samples/s"
    summary = format_summary_line({"train_runtime": 424.46, "train_loss": 0.6428, "train_samples_per_second": 52.77,
                                   "train_steps_per_second": 1.659, "epoch": 8.0, "total_flos": 1e9,
                                   "throughput/tokens_total": 1238712}, 700, 700)
    assert summary == "done   700/700  in 7m04s  train_loss 0.6428  52.8 samples/s  1.66 steps/s  1,238,712 tokens"
    assert [duration(s) for s in (0.4, 45, 72, 3 * 3600 + 125)] == ["0s", "45s", "1m12s", "3h02m"]


def _train(tmp_path, model_dir, data_dir, **extra) -> list[dict]:
    keys = {
        "model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"), "stage": "sft", "finetuning_type": "lora",
        "dataset": "numbers,chats", "template": "qwen", "cutoff_len": 64, "per_device_train_batch_size": 8,
        "max_steps": 4, "logging_steps": 2, "val_size": 0.2, "eval_strategy": "steps", "eval_steps": 4,
        "save_strategy": "no", "seed": 0, **extra,
    }
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(keys))
    assert main(["train", str(cfg)]) == 0
    return [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]


def test_training_prints_aligned_lines_and_a_bar_with_eta(tmp_path, tiny_model_dir, data_dir, capfd):
    rows = _train(tmp_path, tiny_model_dir, data_dir)
    out, err = capfd.readouterr()
    assert "{'loss'" not in out + err and "{'eval_loss'" not in out + err and "{'train_runtime'" not in out + err
    lines = [line for line in err.splitlines() if line.startswith(("step ", "done "))]
    train = [line for line in lines if " loss " in line]
    assert len(train) == 2, err
    assert all(re.search(r"step +\d+/4  loss \d+\.\d{4}  lr \d\.\d\de-\d\d  grad_norm [\d.]+ .* tok/s  mfu +[\d.]+%"
                         r"  eta \d+s$", line) for line in train), train
    assert train[0].index("tok/s") == train[1].index("tok/s")  # aligned
    assert any(re.match(r"step +4/4  eval_loss \d\.\d{4}  eval_ppl [\d.]+  [\d.]+ s  [\d,]+ samples/s$", line)
               for line in lines), lines
    assert any(re.match(r"done +4/4  in \d+s  train_loss \d\.\d{4}  .* tokens", line) for line in lines), lines
    assert re.search(r"(^|\r)train: +100%.*4/4 \[\d\d:\d\d<00:00", err), "no training bar with ETA on stderr"
    # trainer_log.jsonl keeps its keys: the console changed, the log did not
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert {"step", "total_steps", "epoch", "elapsed_s", "loss", "lr", "grad_norm", "tokens_per_s",
            "throughput/tokens_per_s", "throughput/mfu"} <= set(rows[0])


def test_disable_tqdm_keeps_the_lines_and_drops_the_bar(tmp_path, tiny_model_dir, data_dir, capfd):
    _train(tmp_path, tiny_model_dir, data_dir, disable_tqdm=True, val_size=0, eval_strategy="no")
    err = capfd.readouterr().err
    assert not re.search(r"(^|\r)train: +\d+%", err, re.M), "a training bar under disable_tqdm"
    assert len([line for line in err.splitlines() if line.startswith("step ") and " loss " in line]) == 2
