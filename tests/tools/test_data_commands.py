"""`lmforge data validate|stats|preview` on small crafted datasets whose figures are known in advance.

A word-level tokenizer (one token per word) and the `empty` template (no markup) make every count a word
count: a record "w1 w2 " -> "r1 r2" has a 2-token prompt and a 2-token response.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.tools.data_stats import batching_figures, data_statistics, padding_fraction, percentile, steps_per_epoch
from lmforge.model.tokenizer import load_tokenizer
from lmforge.data.templates import resolve_template

WORDS = [f"w{i}" for i in range(10)] + [f"r{i}" for i in range(10)]


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i % 10}" for i in range(n))


@pytest.fixture
def word_tokenizer_dir(tmp_path):
    vocab = {t: i for i, t in enumerate(["<unk>", "<eos>", "<pad>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>",
                                        pad_token="<pad>")
    directory = tmp_path / "wordtok"
    tokenizer.save_pretrained(directory)
    (directory / "config.json").write_text('{"model_type": "llama"}')  # a model directory, though no model loads
    return directory


# (prompt words, response words): dataset a; the last record has an empty response and is dropped
DATASET_A = [(2, 2), (3, 3), (4, 4), (6, 4), (1, 9), (2, 0)]
DATASET_B = [(2, 2), (2, 2)]


@pytest.fixture
def crafted(tmp_path, word_tokenizer_dir):
    root = tmp_path / "data"
    root.mkdir()
    for name, shape in (("a", DATASET_A), ("b", DATASET_B)):
        # the prompt ends with a space, so the empty template's prompt and response stay separate words
        records = [{"instruction": words("w", p) + " ", "input": "", "output": words("r", r)} for p, r in shape]
        (root / f"{name}.json").write_text(json.dumps(records))
    info = {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    cfg = {"model_name_or_path": str(word_tokenizer_dir), "stage": "sft", "dataset_dir": str(root),
           "dataset": "a,b", "template": "empty", "cutoff_len": 8, "output_dir": str(tmp_path / "out"),
           "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_stats_figures_equal_the_hand_counts(crafted):
    cfg = load_config(crafted)
    tokenizer = load_tokenizer(cfg.model)
    a, b, overall = data_statistics(cfg, tokenizer, resolve_template("empty", tokenizer))
    assert (a.records, a.kept, a.dropped) == (6, 5, {"empty response": 1})
    assert a.prompt_lengths == [2, 3, 4, 6, 1] and a.response_lengths == [2, 3, 4, 4, 9]
    # cutoff 8: (6, 4) keeps 5 + 3 (proportional rule), (1, 9) keeps 1 + 7 (a short prompt keeps itself)
    assert a.trained_lengths == [4, 6, 8, 8, 8] and a.truncated == 2
    assert a.supervised_tokens == 2 + 3 + 4 + 3 + 7
    assert a.supervised_fraction == pytest.approx(19 / 34)
    assert (b.records, b.kept, b.trained_lengths, b.supervised_tokens) == (2, 2, [4, 4], 4)
    assert (overall.records, overall.kept, overall.truncated) == (8, 7, 2)
    assert overall.supervised_fraction == pytest.approx(23 / 42)

    lengths = overall.trained_lengths
    figures = batching_figures(lengths, batch_size=2, cutoff_len=8)
    # rows padded to a multiple of 8 are all 8 wide: 4 batches x 2 rows, 42 real tokens of 56 positions
    assert figures["padding"]["padding"] == pytest.approx(1 - 42 / 56)
    assert figures["group_by_length"]["padding"] == pytest.approx(1 - 42 / 56)
    # best fit decreasing: [8] [8] [8] [6] [4 4] [4] -> 6 rows of 8
    assert figures["packing"]["rows"] == 6 and figures["packing"]["padding"] == pytest.approx(1 - 42 / 48)
    assert steps_per_epoch(figures["padding"]["batches"], 2) == 2 and steps_per_epoch(3, 2) == 2
    assert steps_per_epoch(5, 2) == 3 and steps_per_epoch(1, 4) == 1


def test_stats_cli_prints_the_table_and_writes_the_plot(crafted, tmp_path, capsys):
    plot = tmp_path / "lengths.png"
    assert main(["data", "stats", str(crafted), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^a\s+6\s+5\s+1\s+2\s+55\.9%$", out, re.M)
    assert re.search(r"^overall \(dataset\)\s+8\s+7\s+1\s+2\s+54\.8%$", out, re.M)
    assert re.search(r"^a\s+prompt\s+3\.2\s+3\s+6\s+6\s+6$", out, re.M)  # nearest-rank p50 / p90 / p99
    assert re.search(r"^\s+total\s+7\.6\s+8\s+10\s+10\s+10$", out, re.M)
    assert "a: 1 empty response" in out
    assert re.search(r"^plain padding \(shuffled\)\s+4\s+25\.0%\s+2\s+<- this config$", out, re.M)
    assert re.search(r"^packing \(rows of 8\)\s+3\s+12\.5%\s+2$", out, re.M)
    assert plot.stat().st_size > 10_000


def test_percentile_and_padding_helpers():
    assert [percentile([1, 2, 3, 4], p) for p in (25, 50, 75, 99, 100)] == [1, 2, 3, 4, 4]
    assert padding_fraction([[0, 1]], [3, 9], multiple=1) == pytest.approx(1 - 12 / 18)
    assert padding_fraction([[0, 1]], [3, 9], multiple=8) == pytest.approx(1 - 12 / 32)


def test_validate_lists_every_bad_record_by_file_and_line(crafted, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "bad.jsonl").write_text(
        '{"instruction": "w1 ", "output": "r1"}\n'
        '{"instruction": "w2 ", "output": ""}\n'
        '{"instruction": "w3 " "output": "r3"}\n'
        "\n"
        "[1, 2]\n"
        '{"instruction": "", "input": "", "output": "r4"}\n'
        '{"instruction": "w5 ", "output": "r5"}\n'
    )
    (root / "array.json").write_text('[\n  {"instruction": "w1 ", "output": "r1"},\n  {"instruction": "w2 ",\n'
                                     '   "output": ""},\n  {"instruction": "w3 ", "output": "r3"}\n]\n')
    info = json.loads((root / "dataset_info.json").read_text())
    info.update({"bad": {"file_name": "bad.jsonl"}, "array": {"file_name": "array.json"}})
    (root / "dataset_info.json").write_text(json.dumps(info))
    assert main(["data", "validate", str(crafted), "dataset=a,bad,array"]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if line.startswith(str(root))]
    assert problems == [
        f"{root}/a.json:1 (record 5): empty response (dataset 'a', alpaca format)",
        f"{root}/bad.jsonl:2: empty response (dataset 'bad', alpaca format)",
        f"{root}/bad.jsonl:3: invalid JSON (Expecting ',' delimiter at column 23)",
        f"{root}/bad.jsonl:5: expected a JSON object, got list",
        f"{root}/bad.jsonl:6: missing prompt (dataset 'bad', alpaca format)",
        f"{root}/array.json:3 (record 1): empty response (dataset 'array', alpaca format)",
    ]
    assert "  bad: 6 records, 2 good, 4 bad" in "\n".join(out)
    assert out[-1] == "lmforge data validate: 3 dataset(s), 15 records: 6 bad (stage sft)"

    assert main(["data", "validate", str(crafted), "dataset=b"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("2 records: all good (stage sft)")


def test_preview_marks_trained_tokens_truncation_and_boundaries(crafted, tmp_path, capsys):
    page = tmp_path / "preview.html"
    assert main(["data", "preview", str(crafted), "-n", "5", "--color", "never", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "--- sample 0: 4 tokens ---\nw0 w1[[r0 r1]]\n" in out  # labels exactly on the response
    # (6, 4) cut to 5 + 3 by cutoff_len 8, and marked
    assert "--- sample 3: 8 tokens ---\nw0 w1 w2 w3 w4[[r0 r1 r2]]\n[truncated: 10 -> 8 tokens by cutoff_len 8]" in out
    assert out.count("[truncated:") == 2
    text = page.read_text()
    assert '<span class="m">w0 w1</span><span class="t">r0 r1</span>' in text and "truncated: 10 -&gt; 8" in text

    assert main(["data", "preview", str(crafted), "-n", "1", "--tokens", "--color", "never"]) == 0
    assert "w0|w1|[[r0]]|[[r1]]" in capsys.readouterr().out
    assert main(["data", "preview", str(crafted), "-n", "1", "--color", "always"]) == 0
    assert "\x1b[1;32mr0 r1\x1b[0m" in capsys.readouterr().out  # trained: bold green


def test_preview_shows_pairs_side_by_side(crafted, tmp_path, capsys):
    root = tmp_path / "data"
    pairs = [{"instruction": "w1 w2 ", "input": "", "chosen": "r1 r2", "rejected": "r3"}]
    (root / "pairs.json").write_text(json.dumps(pairs))
    info = json.loads((root / "dataset_info.json").read_text())
    columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
    info["pairs"] = {"file_name": "pairs.json", "ranking": True, "columns": columns}
    (root / "dataset_info.json").write_text(json.dumps(info))
    assert main(["data", "preview", str(crafted), "stage=dpo", "dataset=pairs", "--color", "never"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("chosen: 4 tokens"))
    assert lines[head].split(" | ") == ["chosen: 4 tokens".ljust(len(lines[head].split(" | ")[0])), "rejected: 3 tokens"]
    left, right = lines[head + 1].split(" | ")
    assert left.rstrip() == "w1 w2[[r1 r2]]" and right == "w1 w2[[r3]]"
