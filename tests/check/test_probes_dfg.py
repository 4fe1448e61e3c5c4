"""Probes d-g of issue 20 (format_following, prompt_edits, forgetting, quantization): parsers on hand-written
answers, deterministic prompt sets and edits that name their sources, oracles for the divergences (a model
against itself: agreement 1, KL 0), and bitsandbytes' int8 closer to full precision than NF4 on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.check.context import Generation, Sample
from lmforge.check.probe import FAIL, PASS, PROBES, SKIP, WARN
from lmforge.check.probes import format_following as ff
from lmforge.check.probes import prompt_edits as pe
from lmforge.check.probes.forgetting import general_items, general_texts, next_token_divergence
from lmforge.check.probes.quantization import load_quantized


# -- a stand-in for CheckContext (the API the probes use, nothing more): it takes scripted engines and hand-made
# samples; test_probes_run_through_lmforge_check runs the same probes on the real CheckContext --------------------
class StandInContext:
    def __init__(self, tuned, base=None, samples=(), work_dir: Path | None = None, seed: int = 0):
        self.seed, self._tuned, self._base, self._samples, self.work_dir = seed, tuned, base, list(samples), work_dir
        self.run_info = None

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def settings(self, name: str) -> dict:
        return dict(PROBES.get(name).defaults)

    def tuned(self):
        return self._tuned

    def base(self):
        return self._base

    def samples(self, n: int) -> list[Sample]:
        return self._samples[:n]

    def generate(self, engine, conversations, max_new_tokens=None) -> list[Generation]:
        if isinstance(engine, FakeEngine):
            return [Generation(engine.answer(c), [], True) for c in conversations]
        out = []
        for conv in conversations:  # greedy, one at a time: the stand-in needs no batching
            ids = engine.prompt_ids(conv)
            prompt = torch.tensor([ids])
            with torch.no_grad():
                new = engine.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=max_new_tokens or 16, eos_token_id=engine.stop_ids,
                                            pad_token_id=engine.tokenizer.pad_token_id)[0, len(ids):].tolist()
            stopped = bool(new) and new[-1] in engine.stop_ids
            new = new[:-1] if stopped else new
            out.append(Generation(engine.tokenizer.decode(new, skip_special_tokens=True), new, stopped))
        return out


class FakeEngine:
    def __init__(self, answer):
        self.answer = answer


def run(name: str, ctx, **overrides):
    return PROBES.get(name).run(ctx, {**PROBES.get(name).defaults, **overrides})


def engine_for(model_dir: Path):
    from lmforge.config import load_inference_config
    from lmforge.inference.engine import ChatEngine

    return ChatEngine(load_inference_config(None, [f"model_name_or_path={model_dir}", "template=qwen"]))


# -- d. format following ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, spec, ok", [
    ('{"name": "Oslo", "color": "grey"}', {"keys": ["color", "name"]}, True),
    ('```json\n{"name": "Oslo", "color": "grey"}\n```', {"keys": ["name", "color"]}, True),
    ('Sure: {"name": "Oslo"}', {"keys": ["name", "color"]}, False),  # a key missing
    ('{"name": "Oslo", "color": }', {"keys": ["name", "color"]}, False),  # not JSON
    ("name: Oslo", {"keys": ["name"]}, False),
])
def test_json_parser(text, spec, ok):
    assert (ff.check_json(text, spec) == "") is ok


TABLE = "| Name | Year |\n| --- | ---: |\n| a | 1 |\n| b | 2 |"


@pytest.mark.parametrize("text, spec, ok", [
    (TABLE, {"columns": 2, "rows": 2}, True),
    (TABLE, {"columns": 2, "rows": 3}, False),
    (TABLE, {"columns": 3, "rows": 2}, False),
    ("| Name | Year |\n| a | 1 |\n| b | 2 |", {"columns": 2, "rows": 1}, False),  # no separator row
    ("Name, Year\na, 1", {"columns": 2, "rows": 1}, False),
])
def test_table_parser(text, spec, ok):
    assert (ff.check_table(text, spec) == "") is ok


def test_bullet_and_one_word_parsers():
    assert ff.check_bullets("- a\n- b\n* c", {"count": 3}) == ""
    assert ff.check_bullets("Here:\n- a\n- b", {"count": 3}) == "2 bullet points, asked for 3"
    assert ff.check_bullets("1. a\n2. b", {"count": 2}) == ""
    assert ff.check_one_word("Cold.", {}) == ""
    assert ff.check_one_word("It is cold", {}) == "3 words"


def test_format_prompts_are_deterministic_and_cover_every_format():
    prompts = ff.format_prompts(random.Random("0:format_following"), 16, seed=0)
    again = ff.format_prompts(random.Random("0:format_following"), 16, seed=0)
    other = ff.format_prompts(random.Random("1:format_following"), 16, seed=1)
    assert prompts == again and prompts != other
    assert {(p.kind, p.few_shot) for p in prompts} == {(k, s) for k in ff.FORMATS for s in (False, True)}
    assert [p.source for p in prompts[:2]] == ["generated:0:0", "generated:0:1"]
    for p in prompts:  # the worked example of a few-shot prompt passes its own parser (a different question)
        if p.few_shot:
            assert len(p.messages) == 3 and p.messages[0]["content"] != p.messages[2]["content"]
            shot_spec = _spec_of(p.kind, p.messages[0]["content"])
            assert ff.FORMATS[p.kind].check(p.messages[1]["content"], shot_spec) == ""


def _spec_of(kind: str, question: str) -> dict:
    import re

    if kind == "json":
        return {"keys": re.findall(r'"(\w+)"', question)}
    if kind == "table":
        columns = question.split("with the columns ")[1].split(" and exactly")[0].split(", ")
        return {"columns": len(columns), "rows": int(re.search(r"exactly (\d+) rows", question).group(1))}
    if kind == "bullets":
        return {"count": int(re.search(r"exactly (\d+)", question).group(1))}
    return {}


def _good_answer(prompt: ff.FormatPrompt) -> str:
    spec = prompt.spec
    if prompt.kind == "json":
        return json.dumps({k: 1 for k in spec["keys"]})
    if prompt.kind == "table":
        rows = ["|" + "|".join(["x"] * spec["columns"]) + "|" for _ in range(spec["rows"])]
        header = ["|" + "|".join(["h"] * spec["columns"]) + "|", "|" + "|".join(["---"] * spec["columns"]) + "|"]
        return "\n".join([*header, *rows])
    if prompt.kind == "bullets":
        return "\n".join("- item" for _ in range(spec["count"]))
    return "Cold"


def test_format_following_verdict_is_relative_to_the_base():
    prompts = ff.format_prompts(random.Random("0:format_following"), 16, seed=0)
    good = {p.messages[-1]["content"]: _good_answer(p) for p in prompts}
    follows = FakeEngine(lambda conv: good[conv[-1]["content"]])
    rambles = FakeEngine(lambda conv: "I would rather talk about the weather today.")
    same = run("format_following", StandInContext(follows, base=follows))
    assert (same.verdict, same.value, same.details["tuned_pass_rate"]["all"]) == (PASS, 0.0, 1.0)
    worse = run("format_following", StandInContext(rambles, base=follows))
    assert (worse.verdict, worse.value, worse.details["base_pass_rate"]["all"]) == (FAIL, -1.0, 1.0)
    assert worse.examples and worse.examples[0].source.startswith("generated:0:")
    both_bad = run("format_following", StandInContext(rambles, base=rambles))
    assert (both_bad.verdict, both_bad.value) == (PASS, 0.0)  # the base could not either: no drop
    alone = run("format_following", StandInContext(rambles))
    assert (alone.verdict, alone.value, alone.threshold) == (WARN, 0.0, "WARN < 0.5")  # no base: WARN only


# -- e. prompt edits -----------------------------------------------------------------------------------------------
def shift_samples(n: int) -> list[Sample]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        seq = " ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4))
        prompt = f"Shift each letter by one: {seq}"
        out.append(Sample(f"data/shift_heldout.json:{i}", [{"role": "user", "content": prompt}],
                          pe._shift_answer(prompt)))
    return out


def test_generic_edits_replace_a_number_a_name_or_the_longest_sentence():
    rng = random.Random(0)
    number = pe.generic_edit("Add 17 apples to the basket.", rng)
    assert (number.kind, number.span) == ("number", "17") and len(number.replacement) == 2
    assert number.prompt == f"Add {number.replacement} apples to the basket." and number.replacement != "17"
    name = pe.generic_edit("Write a letter to Maria about the trip.", rng)
    assert (name.kind, name.span) == ("entity", "Maria") and name.prompt.startswith("Write a letter to ")
    assert pe.generic_edit("Shift each letter by one: k t p a", rng) is None  # nothing generic to edit
    long = "Summarise this. " + "It rained. " * 3 + "The longest sentence of this input is this very one here. " * 1 \
        + "Short one. " * 15
    edit = pe.generic_edit(long, rng)
    assert edit.kind == "sentence" and edit.span == "The longest sentence of this input is this very one here."
    assert edit.replacement in edit.prompt and edit.span not in edit.prompt


def test_prompt_edits_are_deterministic_and_name_their_sources():
    samples = shift_samples(6) + [Sample("data/misc.json:3", [{"role": "user", "content": "Hello there"}], "Hi")]
    first, skipped = pe.edit_samples(samples, random.Random("0:prompt_edits"), "auto")
    again, _ = pe.edit_samples(samples, random.Random("0:prompt_edits"), "auto")
    other, _ = pe.edit_samples(samples, random.Random("1:prompt_edits"), "auto")
    assert first == again and first != other
    assert skipped == ["data/misc.json:3"]
    assert [e.source for e in first] == [f"data/shift_heldout.json:{i}" for i in range(6)]
    for e in first:
        assert e.task == "letter_shift" and e.edit.span != e.edit.replacement
        assert e.edited[-1]["content"] == f"Shift each letter by one: {e.edit.replacement}"
    none, _ = pe.edit_samples(samples, random.Random(0), None)  # generic edits only: the shift prompts have none
    assert none == []


def test_a_memorising_model_recites_and_a_computing_one_does_not():
    samples = shift_samples(8)
    ctx = StandInContext(FakeEngine(lambda conv: samples[0].answer), samples=samples)  # one answer for everything
    recites = run("prompt_edits", ctx)
    assert (recites.verdict, recites.value) == (FAIL, 1.0)
    assert recites.details["accuracy_edited"] < 0.2
    computes = run("prompt_edits", StandInContext(FakeEngine(lambda conv: pe._shift_answer(conv[-1]["content"])),
                                                  samples=samples))
    assert (computes.verdict, computes.value) == (PASS, 0.0)
    assert computes.details["accuracy_original"] == computes.details["accuracy_edited"] == 1.0
    rows = computes.details["edits"]  # every edited prompt, with its source record
    assert [r["source"] for r in rows] == [s.source for s in samples]
    assert all(r["edited_prompt"].startswith("Shift each letter by one: ") for r in rows)
    skipped = run("prompt_edits", StandInContext(FakeEngine(lambda conv: "x"), samples=samples), answer_fn=None)
    assert skipped.verdict == SKIP


# -- f. forgetting -------------------------------------------------------------------------------------------------
def test_assets_ship_general_items_and_text():
    items = general_items()
    assert len(items) == 32 and all(0 <= it["answer"] < len(it["choices"]) for it in items)
    assert len(general_texts()) == 6


@pytest.fixture(scope="module")
def tuned_engine(tiny_model_dir):
    return engine_for(tiny_model_dir)


@pytest.fixture(scope="module")
def perturbed_engine(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("perturbed") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    return engine_for(out)


def test_forgetting_of_a_model_against_itself_is_zero(tuned_engine):
    result = run("forgetting", StandInContext(tuned_engine, base=tuned_engine))
    assert (result.verdict, result.value) == (PASS, 0.0)
    assert result.details["next_token_agreement"] == 1.0 and result.details["mean_kl_base_tuned"] == 0.0
    assert result.details["text_positions"] > 300


def test_forgetting_against_a_perturbed_copy(tuned_engine, perturbed_engine):
    result = run("forgetting", StandInContext(perturbed_engine, base=tuned_engine))
    assert result.details["mean_kl_base_tuned"] > 0.01
    assert result.details["next_token_agreement"] < 1.0
    assert result.value == pytest.approx(result.details["base_accuracy"] - result.details["tuned_accuracy"])
    assert run("forgetting", StandInContext(tuned_engine)).verdict == SKIP


def test_forgetting_on_lm_eval_task_files_equals_the_built_in_scoring(tuned_engine, perturbed_engine, tmp_path):
    # the built-in items as an lm-eval multiple_choice task: the same requests, so the same accuracies
    rows = tmp_path / "general.jsonl"
    rows.write_text("".join(json.dumps(it) + "\n" for it in general_items()))
    task = tmp_path / "general_mc.yaml"
    task.write_text(f"task: general_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {rows}\n"
                    'test_split: test\noutput_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
                    'doc_to_target: answer\ndoc_to_choice: "{{choices}}"\nmetric_list:\n  - metric: acc\n')
    ctx = StandInContext(perturbed_engine, base=tuned_engine)
    built_in = run("forgetting", ctx)
    from_tasks = run("forgetting", ctx, tasks=str(task))
    assert from_tasks.details["tuned_scores"] == {"general_mc acc,none": round(built_in.details["tuned_accuracy"], 4)}
    assert from_tasks.details["base_accuracy"] == pytest.approx(built_in.details["base_accuracy"])
    assert from_tasks.value == pytest.approx(built_in.value)


def test_divergence_counts_positions_from_the_start(tuned_engine):
    ids = tuned_engine.tokenizer.encode(general_texts()[0])[:20]
    agree, kl, positions = next_token_divergence(tuned_engine.model, tuned_engine.model, [ids], starts=[15])
    assert (agree, kl, positions) == (1.0, 0.0, 5)


# -- g. quantization -----------------------------------------------------------------------------------------------
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="the quantization probe needs bitsandbytes")


@needs_bnb
def test_int8_is_closer_to_full_precision_than_nf4(tuned_engine, tmp_path):
    ctx = StandInContext(tuned_engine, samples=shift_samples(6), work_dir=tmp_path)
    result = run("quantization", ctx, max_new_tokens=8)
    int8, int4 = result.details["int8"], result.details["int4"]
    assert int8["agreement"] >= int4["agreement"] and result.value == int4["agreement"]
    assert 0 <= int8["mean_kl"] < int4["mean_kl"] and int4["mean_kl"] > 0
    assert int8["positions"] == int4["positions"] > 0
    assert int8["mode"] == "eval" and int4["mode"].startswith("train")  # tiny's 16-wide k/v projections
    assert (tmp_path / "quantization" / "full_precision" / "config.json").is_file()
    assert result.verdict in (PASS, WARN, FAIL) and "4-bit" in result.unit


@needs_bnb
def test_quantized_model_in_train_mode_has_no_dropout(tiny_model_dir):
    model, mode = load_quantized(tiny_model_dir, 4)
    assert model.training
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))


# -- the four probes through `lmforge check` and the real CheckContext ----------------------------------------------
def test_probes_run_through_lmforge_check(tmp_path, run_dir):
    import yaml

    from lmforge.cli import main

    probes = ["format_following", "prompt_edits", "forgetting", "quantization"]
    check = tmp_path / "check.yaml"
    check.write_text(yaml.safe_dump({"adapter_name_or_path": str(run_dir), "check": {
        "probes": probes, "samples": 4, "max_new_tokens": 8, "output_dir": str(tmp_path / "report"),
        "format_following": {"prompts": 8}, "prompt_edits": {"answer_fn": "none"}}}))
    main(["check", str(check)])
    results = {r["name"]: r for r in json.loads((tmp_path / "report" / "check_report.json").read_text())["results"]}
    assert set(results) == set(probes)
    for name, result in results.items():
        assert "error" not in result["details"], (name, result["details"].get("traceback"))
    formats = results["format_following"]["details"]
    assert formats["prompts"] == 8 and "base_pass_rate" in formats
    edits = results["prompt_edits"]["details"]["edits"]  # every edited prompt named with its record
    assert len(edits) == 4 and all(e["source"].startswith(str(run_dir.parent / "numbers.json") + ":") for e in edits)
    assert all(e["kind"] == "number" and e["replacement"] in e["edited_prompt"] for e in edits)
    forgetting = results["forgetting"]["details"]  # 2 LoRA steps from a zero B: barely moved
    assert forgetting["next_token_agreement"] > 0.9 and forgetting["mean_kl_base_tuned"] < 0.05
    assert results["quantization"]["details"]["int4"]["mode"].startswith("train")


def test_a_number_in_the_answer_counts_only_as_a_whole_word():
    samples = [Sample(f"data/numbers.json:{i}", [{"role": "user", "content": f"Say the number {i + 10}"}], "")
               for i in range(4)]
    echo = FakeEngine(lambda conv: "The number is " + conv[-1]["content"].split()[-1] + ".")
    result = run("prompt_edits", StandInContext(echo, samples=samples))
    assert (result.verdict, result.value, result.details["should_change"]) == (PASS, 0.0, 4)
    stuck = run("prompt_edits", StandInContext(FakeEngine(lambda conv: "The number is 100."), samples=samples))
    assert stuck.verdict == SKIP  # "10" is not in "100": no answer mentions a span, nothing to judge
    assert [r["source"] for r in stuck.details["edits"]] == [s.source for s in samples]
