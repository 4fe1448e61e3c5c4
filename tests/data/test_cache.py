"""The tokenized-dataset cache: a run that loads an entry repeats the drop report of the run that built it."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.data.cache import DROP_REPORT
from lmforge.data.pipeline import build_datasets
from lmforge.model.tokenizer import load_tokenizer
from lmforge.data.templates import resolve_template


class Warnings(logging.Handler):
    """Collects the lmforge logger's warnings (it does not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings():
    handler = Warnings()
    logger = logging.getLogger("lmforge")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@pytest.fixture
def config(tmp_path, tiny_model_dir):
    """12 records: 2 without a response (dropped by the format), 3 whose response truncation cuts away."""
    records = [{"instruction": f"Say {i}", "output": f"It is {i}."} for i in range(7)]
    # a response of over half of cutoff_len after a prompt 100 times longer keeps int(32 * 20 / 2020) = 0 tokens
    records += [{"instruction": "word " * 2000, "output": "cut away " * 10} for _ in range(3)]
    records += [{"instruction": "no answer here"}, {"instruction": "nor here", "output": None}]
    root = tmp_path / "data"
    root.mkdir()
    (root / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = {"model_name_or_path": str(tiny_model_dir), "stage": "sft", "template": "qwen", "dataset_dir": str(root),
           "dataset": str(root / "d.jsonl"), "cutoff_len": 32, "output_dir": str(tmp_path / "out"),
           "data_cache_dir": str(tmp_path / "cache"), "max_steps": 1, "disable_tqdm": True, "report_to": "none"}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _build(config_path):
    cfg = load_config(config_path)
    tokenizer = load_tokenizer(cfg.model)
    template = resolve_template(cfg.data.template, tokenizer)
    return build_datasets(cfg.data, "sft", tokenizer, template, seed=cfg.training.seed)


def test_cached_run_repeats_the_drop_report(config, warnings):
    first = _build(config)
    first_warnings = list(warnings)
    warnings.clear()
    second = _build(config)

    assert not first.from_cache and second.from_cache
    assert len(first.drop_report) == 2  # one line for the format's drops, one for truncation
    assert "dropped 2 records: 2 missing response field 'output' (records 10, 11)" in first.drop_report[0]
    assert "train: dropped 3 of 10 samples" in first.drop_report[1]
    assert second.drop_report == first.drop_report
    assert [w for w in first_warnings if "dropped" in w] == first.drop_report
    assert [w for w in warnings if "dropped" in w] == first.drop_report
    assert len(second.train) == len(first.train) == 7


def test_tokenized_path_keeps_the_drop_report(config, tmp_path, warnings):
    saved = tmp_path / "tokenized"
    cfg = yaml.safe_load(config.read_text()) | {"tokenized_path": str(saved)}
    config.write_text(yaml.safe_dump(cfg))
    first = _build(config)
    assert json.loads((saved / DROP_REPORT).read_text()) == first.drop_report
    warnings.clear()
    second = _build(config)
    assert second.from_cache and [w for w in warnings if "dropped" in w] == first.drop_report


def test_second_train_run_reports_the_drops_again(config, warnings):
    """Through the CLI: the run that reuses the cache warns the same drop lines as the one that built it."""
    assert main(["train", str(config)]) == 0
    first = [w for w in warnings if "dropped" in w]
    warnings.clear()
    assert main(["train", str(config), "overwrite_output_dir=true"]) == 0
    second = [w for w in warnings if "dropped" in w]
    assert len(first) == 2 and second == first
