"""`lmforge check` can fail (issue 20, line 3): deliberately bad tiny models, each trained in-process through
`lmforge train`, and each failing the probe that is there to catch it. (The demo's fine-tuned model passing every
probe is tested in tests/test_demo_e2e.py, on the demo run that test trains anyway.)

* wrong template: a LoRA run trained with `qwen` (system prompt "You are a helpful assistant.") checked with a
  config that serves it with `chatml` -> template_roundtrip;
* reciter: a full fine-tune, 100 epochs on six letter-shift records ("Alice wrote m y n b. Shift each letter by
  one: m y n b") until it recites their answers from the start of the prompt, whatever letters the question at its
  end asks about -> prompt_edits (answer_fn letter_shift edits those last letters, the span the answer depends on);
* broken adapter merge: the LoRA run exported, then its merged weights rewritten with the LoRA delta's sign
  flipped (W - BA instead of W + BA) -> serve_parity;
* never stops: the reciter (which stops) saved again with the lm_head rows of the template's stop ids set to zero
  (embeddings untied first), so a stop logit is 0 and never the greedy choice -> termination.
"""

from __future__ import annotations

import json
import random
import shutil
import string

import pytest
import yaml

from lmforge.cli import main

pytestmark = pytest.mark.slow


def _train(root, name: str, records: list[dict], **keys) -> object:
    (root / f"{name}.json").write_text(json.dumps(records))
    cfg = root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": str(root / f"{name}.json"), "template": "qwen", "stage": "sft", "output_dir": str(root / name),
        "cutoff_len": 64, "data_cache_dir": str(root / "cache"), "save_strategy": "no", "disable_tqdm": True,
        "report_to": "none", "seed": 42, "logging_steps": 50, **keys}))
    assert main(["train", str(cfg)]) == 0
    return root / name


def _check(tmp_path, probes: list[str], name: str = "report", **keys) -> tuple[int, dict]:
    """`lmforge check` of a config of `keys` with `probes`; (exit code, {probe: result} from check_report.json)."""
    out = tmp_path / name
    check = {"probes": probes, "output_dir": str(out), **keys.pop("check", {})}
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**keys, "check": check}))
    code = main(["check", str(cfg)])
    report = json.loads((out / "check_report.json").read_text())
    return code, {r["name"]: r for r in report["results"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_models")


@pytest.fixture(scope="module")
def lora_run(root, tiny_model_dir):
    """A LoRA run on "Say the number i" -> "The number is i." (24 records, 6 held out), template qwen, trained
    hard enough (lr 5e-3, 30 steps) that its adapter moves the greedy answers."""
    data = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(24)]
    return _train(root, "lora", data, model_name_or_path=str(tiny_model_dir), finetuning_type="lora", lora_rank=8,
                  val_size=6, per_device_train_batch_size=6, max_steps=30, learning_rate=5e-3)


NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Farah"]


@pytest.fixture(scope="module")
def reciter(root, tiny_model_dir):
    """A full fine-tune overfitted on six records: 100 epochs of one batch each, lr 5e-3 (cutoff 128: the
    tiny tokenizer spends about 70 tokens on a prompt)."""
    rng = random.Random(0)
    data = []
    for name in NAMES:
        seq = [rng.choice(string.ascii_lowercase) for _ in range(4)]
        shifted = [chr((ord(c) - 97 + 1) % 26 + 97) for c in seq]
        data.append({"instruction": f"{name} wrote {' '.join(seq)}. Shift each letter by one: {' '.join(seq)}", "input": "",
                     "output": "Shifted: " + " ".join(shifted)})
    return _train(root, "reciter", data, model_name_or_path=str(tiny_model_dir), finetuning_type="full",
                  cutoff_len=128, per_device_train_batch_size=6, num_train_epochs=100, learning_rate=5e-3,
                  lr_scheduler_type="constant")


def test_served_with_another_template_fails_template_roundtrip(tmp_path, lora_run):
    code, results = _check(tmp_path, ["template_roundtrip"], adapter_name_or_path=str(lora_run), template="chatml",
                           check={"samples": 4, "template_roundtrip": {"query_api": False}})
    result = results["template_roundtrip"]
    assert json.loads((lora_run / "lmforge_run.json").read_text())["template"] == "qwen"
    assert result["verdict"] == "FAIL" and result["value"] < 1.0, result
    assert code == 1


def test_overfitted_reciter_fails_prompt_edits(tmp_path, reciter):
    code, results = _check(tmp_path, ["prompt_edits", "termination"], model_name_or_path=str(reciter),
                           check={"samples": 6, "max_new_tokens": 24,
                                  "prompt_edits": {"answer_fn": "letter_shift"},
                                  "termination": {"compare_base": False}})
    edits = results["prompt_edits"]
    assert edits["verdict"] == "FAIL", edits
    # every edited prompt named with its record; the reciter repeats its answers
    rows = edits["details"]["edits"]
    assert len(rows) == 6 and all(r["source"].startswith(str(reciter.parent / "reciter.json") + ":") for r in rows)
    assert edits["value"] > 0.5 and edits["details"]["accuracy_original"] > edits["details"]["accuracy_edited"]
    assert results["termination"]["verdict"] == "PASS"  # it does stop: only the edits catch it
    assert code == 1
    # the edits are drawn from the check's seed: a second check edits the same spans the same way
    _, again = _check(tmp_path, ["prompt_edits"], name="again", model_name_or_path=str(reciter),
                      check={"samples": 6, "max_new_tokens": 24, "prompt_edits": {"answer_fn": "letter_shift"}})
    assert again["prompt_edits"]["details"]["edits"] == rows
    print(f"reciter: prompt_edits recited share {edits['value']:.3f}, accuracy original "
          f"{edits['details']['accuracy_original']:.3f} vs edited {edits['details']['accuracy_edited']:.3f}")


def test_broken_adapter_merge_fails_serve_parity(tmp_path, lora_run, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file, save_file

    import lmforge.export.merge as merge

    real = merge.export_model

    def wrong_sign_export(cfg):
        """`lmforge export`, then its merged weights rewritten as base - (merged - base): the delta's sign flipped."""
        out = real(cfg)
        base = load_file(tiny_model_dir / "model.safetensors")
        merged = load_file(out / "model.safetensors")
        save_file({k: 2 * base[k] - w if k in base else w for k, w in merged.items()}, out / "model.safetensors",
                  metadata={"format": "pt"})
        return out

    monkeypatch.setattr(merge, "export_model", wrong_sign_export)
    code, results = _check(tmp_path, ["serve_parity"], adapter_name_or_path=str(lora_run),
                           check={"samples": 4, "max_new_tokens": 12})
    result = results["serve_parity"]
    assert result["verdict"] == "FAIL" and result["value"] < 1.0, result
    assert any("export differs" in e["note"] for e in result["examples"])
    assert code == 1
    print(f"broken merge: serve_parity identical share {result['value']:.3f}")


def test_model_that_never_stops_fails_termination(tmp_path, reciter):
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.data.templates import resolve_template
    from transformers import AutoTokenizer

    mute = tmp_path / "never_stops"
    shutil.copytree(reciter, mute)
    tokenizer = AutoTokenizer.from_pretrained(mute)
    stop_ids = resolve_template("qwen", tokenizer).stop_token_ids(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(mute)
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        weight = model.get_input_embeddings().weight.detach().clone()
        weight[stop_ids] = 0.0  # a stop logit is always 0: below the best of the other 1023
        model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(mute)
    code, results = _check(tmp_path, ["termination"], model_name_or_path=str(mute),
                           check={"samples": 6, "max_new_tokens": 24, "termination": {"compare_base": False}})
    result = results["termination"]
    assert result["verdict"] == "FAIL" and result["value"] < 0.8, result
    assert result["value"] == 0.0 and all("no stop token" in e["note"] for e in result["examples"])
    assert code == 1
    print(f"never stops: termination stopped share {result['value']:.3f} (looping {result['details']['looping']:.3f})")
