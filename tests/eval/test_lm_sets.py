"""`lm:` sets: loss / perplexity / bits per byte of held-out text, from a data file and from `lmforge tokenize`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.cli import main
from lmforge.eval.lm_sets import lm_stream, score_lm_stream, windows

LINES = ["alpha bravo charlie delta echo", "foxtrot golf hotel india juliet kilo lima", "one two three",
         "the quick brown fox jumps over the lazy dog", "é ü ß ∑ unicode bytes"]


@pytest.fixture
def heldout(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def direct_loss(model_dir, seq_len):
    """The oracle: encode each line + eos, cut into windows, HF's own loss (labels = inputs) per window."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    stream = [t for line in LINES for t in tokenizer.encode(line, add_special_tokens=False) + [tokenizer.eos_token_id]]
    total, count = 0.0, 0
    for i in range(0, len(stream), seq_len):
        w = stream[i:i + seq_len]
        if len(w) < 2:
            continue
        with torch.no_grad():
            mean = model(torch.tensor([w]), labels=torch.tensor([w])).loss.item()
        total, count = total + mean * (len(w) - 1), count + len(w) - 1
    return total / count, count, tokenizer, model


@pytest.mark.parametrize("seq_len", [7, 4096])
def test_loss_equals_a_direct_forward_pass(tiny_model_dir, heldout, seq_len):
    expected, count, tokenizer, model = direct_loss(tiny_model_dir, seq_len)
    stream = lm_stream(f"lm:{heldout}", tokenizer)
    result = score_lm_stream(stream, model, tokenizer, seq_len=seq_len, batch_size=3)
    assert result["tokens"] == count
    assert result["loss,none"] == pytest.approx(expected, abs=1e-4)
    assert result["perplexity,none"] == pytest.approx(math.exp(result["loss,none"]))
    predicted_bytes = sum(len(tokenizer.decode(w[1:]).encode()) for w in windows(stream, seq_len))
    assert result["bytes"] == predicted_bytes
    assert result["bits_per_byte,none"] == pytest.approx(expected * count / math.log(2) / predicted_bytes, rel=1e-5)
    print(f"seq_len={seq_len}: loss {result['loss,none']:.4f} ppl {result['perplexity,none']:.2f} "
          f"bpb {result['bits_per_byte,none']:.4f} tokens {count}")


def test_memmap_dir_and_its_text_file_score_the_same(tmp_path, tiny_model_dir, heldout, capsys):
    memmap = tmp_path / "tokens"
    assert main(["tokenize", str(heldout), "--tokenizer", str(tiny_model_dir), "--output", str(memmap),
                 "--workers", "1", "--quiet"]) == 0
    out = tmp_path / "out"
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"tasks=lm:{heldout},lm:{memmap}",
                 f"output_path={out}", "batch_size=2"]) == 0
    assert "| lm:" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]
    text, shards = results[f"lm:{heldout}"], results[f"lm:{memmap}"]
    assert text["tokens"] == shards["tokens"] and text["loss,none"] == pytest.approx(shards["loss,none"], abs=1e-6)
    expected, _, _, _ = direct_loss(tiny_model_dir, 4096)  # the tiny model's context holds the whole stream
    assert text["loss,none"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: f"lm:{d / 'absent.txt'}", "is neither a data file, a directory made by `lmforge tokenize`"),
    (lambda d: "lm:", "key 'tasks' expects str, got a mapping"),  # YAML reads a bare 'lm:' as a mapping
    (lambda d: (d / "empty_dir").mkdir() or f"lm:{d / 'empty_dir'}", "has no meta.json"),
    (lambda d: (d / "x.jsonl").write_text('{"body": "hi"}\n') and f"lm:{d / 'x.jsonl'}", "record 0: no 'text' field"),
])
def test_bad_sources_are_one_error(tmp_path, tiny_model_dir, capsys, make, message):
    code = main(["eval", f"model_name_or_path={tiny_model_dir}", f"tasks={make(tmp_path)}"])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err, err


def test_a_dataset_info_entry_scores_its_text_column(tmp_path, tiny_model_dir, heldout):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "data"
    data.mkdir()
    (data / "held.jsonl").write_text("".join(json.dumps({"content": line}) + "\n" for line in LINES))
    (data / "dataset_info.json").write_text(json.dumps({"held": {"file_name": "held.jsonl",
                                                                 "columns": {"prompt": "content"}}}))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert lm_stream(f"lm:{data / 'held'}", tokenizer) == lm_stream(f"lm:{heldout}", tokenizer)
    with pytest.raises(Exception, match="not an entry of"):
        lm_stream(f"lm:{data / 'helt'}", tokenizer)
    assert score_lm_stream(lm_stream(f"lm:{data / 'held'}", tokenizer), model, tokenizer, seq_len=16,
                           batch_size=4)["tokens"] > 0
