"""The shipped local copies of MMLU, HellaSwag, ARC, PIQA, GSM8K and WikiText (examples/eval/tasks, written by
examples/eval/make_tasks.py): they resolve through lmforge's registry with the expected shapes, the generator
reproduces them byte for byte, and lmforge scores them as `lm_eval --model hf` does (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from lmforge.eval.tasks.registry import resolve_selection
from lmforge.eval.tasks.task import build_items, load_split

ROOT = Path(__file__).resolve().parents[2]
TASK_DIR = ROOT / "examples" / "eval" / "tasks"
ALL = "mmlu_local,hellaswag_local,ai2_arc_local,piqa_local,gsm8k_local,wikitext_local"
MMLU = ["mmlu_local_elementary_arithmetic", "mmlu_local_letter_order", "mmlu_local_number_words",
        "mmlu_local_unit_conversion"]
MC = ["hellaswag_local", "arc_challenge_local", "arc_easy_local", "piqa_local"]
LEAVES = [*MMLU, *MC, "gsm8k_local", "wikitext_local"]
# task -> (scored items, shots pool size, choices per item: a number, or the set of numbers seen)
SHAPES = {
    "mmlu_local_elementary_arithmetic": (24, 5, {4}), "mmlu_local_letter_order": (20, 5, {4}),
    "mmlu_local_number_words": (12, 5, {4}), "mmlu_local_unit_conversion": (16, 5, {4}),
    "hellaswag_local": (32, 12, {4}), "arc_challenge_local": (20, 10, {3, 4, 5}),
    "arc_easy_local": (24, 10, {3, 4, 5}), "piqa_local": (30, 10, {2}), "gsm8k_local": (24, 10, None),
    "wikitext_local": (20, 6, None),
}


@pytest.fixture
def at_root(monkeypatch):
    """data_files are relative to the repository root, where both tools are run from."""
    monkeypatch.chdir(ROOT)


def _make_tasks():
    spec = importlib.util.spec_from_file_location("make_tasks", ROOT / "examples" / "eval" / "make_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_generator_reproduces_the_shipped_files(tmp_path):
    written = _make_tasks().make_tasks(tmp_path / "tasks")
    ours = {p.relative_to(tmp_path / "tasks").as_posix() for p in written}
    shipped = {p.relative_to(TASK_DIR).as_posix() for p in TASK_DIR.rglob("*") if p.is_file()}
    assert ours == shipped
    for name in sorted(ours):
        assert (tmp_path / "tasks" / name).read_bytes() == (TASK_DIR / name).read_bytes(), name


def test_every_shipped_task_resolves_with_its_shape(at_root):
    selection = resolve_selection(ALL, "examples/eval/tasks")
    assert sorted(s.task for s in selection.specs) == sorted(LEAVES)
    ((group, leaves),) = selection.groups  # tags (ai2_arc_local) collect without a figure, as in lm-eval
    assert group.group == "mmlu_local" and sorted(leaves) == MMLU
    assert [(a.metric, a.weight_by_size) for a in group.aggregates] == [("acc", True)]
    assert sorted(s.task for s in resolve_selection("ai2_arc_local", "examples/eval/tasks").specs) == \
        ["arc_challenge_local", "arc_easy_local"]
    for spec in selection.specs:
        n_items, n_pool, n_choices = SHAPES[spec.task]
        assert all(not Path(f).is_absolute() for files in spec.data_files.values() for f in files), spec.task
        items = build_items(spec, num_fewshot=0)
        assert len(items) == n_items, spec.task
        assert spec.source_of_fewshot != spec.eval_split, spec.task  # shots from dev / train, never the scored split
        assert len(load_split(spec, spec.source_of_fewshot)) == n_pool, spec.task
        if spec.output_type == "multiple_choice":
            assert {len(item.choices) for item in items} == n_choices, spec.task
            assert all(0 <= item.gold < len(item.choices) for item in items), spec.task
            assert len({item.gold for item in items}) > 1, spec.task  # the right answer is not always first
        elif spec.output_type == "generate_until":
            assert all(item.gold.rsplit("\n", 1)[-1].startswith("#### ") for item in items)
        else:
            assert all(item.gold.startswith(" = ") and item.context == "" for item in items)
    gsm8k = next(s for s in selection.specs if s.task == "gsm8k_local")
    assert gsm8k.num_fewshot == 5 and set(gsm8k.filters) == {"strict-match", "flexible-extract"}
    five = build_items(gsm8k, limit=2)
    assert five[0].context.count("Question: ") == 6 and five[0].context.endswith("\nAnswer:")


def _lm_eval_filtered(out: Path, task: str) -> dict[tuple[int, str], dict]:
    """lm-eval's sample records of one task keyed by (doc_id, filter): gsm8k writes one per filter."""
    (file,) = out.rglob(f"samples_{task}_*.jsonl")
    return {(r["doc_id"], r["filter"]): r for r in map(json.loads, file.read_text().splitlines())}


@pytest.mark.slow
def test_lmforge_and_lm_eval_score_the_shipped_tasks_alike(tmp_path, tiny_model_dir, at_root):
    pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install -e '.[test]'")
    from tests.eval.test_lm_eval_agreement import compare_multiple_choice, lm_eval, lmforge

    # one run of each tool over all six, at five shots (gsm8k's own default; mmlu from dev, the others from train)
    leaves = ",".join(LEAVES)
    ours, our_samples = lmforge(tiny_model_dir, TASK_DIR, tmp_path / "ours", ALL, 5, leaves)
    theirs, their_samples = lm_eval(tiny_model_dir, TASK_DIR, tmp_path / "theirs", ALL, 5, leaves)
    worst, report = 0.0, []
    for task in MMLU:  # acc only: compare_multiple_choice also checks acc_norm
        for doc_id, mine in our_samples[task].items():
            ref = their_samples[task][doc_id]
            args = [ref["arguments"][f"gen_args_{i}"] for i in range(4)]
            assert [[a["arg_0"], a["arg_1"]] for a in args] == mine["arguments"], (task, doc_id)
            their_lls = [float(r[0][0]) for r in ref["resps"]]
            worst = max(worst, *(abs(a - b) for a, b in zip(mine["loglikelihoods"], their_lls)))
            assert mine["loglikelihoods"] == pytest.approx(their_lls, abs=1e-4)
            assert mine["metrics"]["acc"] == ref["acc"]
        assert ours[task]["acc,none"] == theirs[task]["acc,none"], task
    for key in ("acc,none", "acc_stderr,none"):  # the group: size-weighted mean, pooled standard error
        assert ours["mmlu_local"][key] == pytest.approx(theirs["mmlu_local"][key], abs=1e-12), key
    report.append(f"mmlu_local acc {ours['mmlu_local']['acc,none']:.4f} / {theirs['mmlu_local']['acc,none']:.4f}")
    for task in MC:
        worst = max(worst, compare_multiple_choice(our_samples[task], their_samples[task]))
        for key in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
            assert ours[task][key] == pytest.approx(theirs[task][key], abs=1e-12), (task, key)
        report.append(f"{task} acc {ours[task]['acc,none']:.4f} / {theirs[task]['acc,none']:.4f}, acc_norm "
                      f"{ours[task]['acc_norm,none']:.4f} / {theirs[task]['acc_norm,none']:.4f}")
    by_filter = _lm_eval_filtered(tmp_path / "theirs", "gsm8k_local")
    for doc_id, mine in our_samples["gsm8k_local"].items():  # greedy text, then each filter's answer and score
        for name in ("strict-match", "flexible-extract"):
            ref = by_filter[(doc_id, name)]
            assert mine["arguments"][0][0] == ref["arguments"]["gen_args_0"]["arg_0"], doc_id  # the 5-shot prompt
            assert mine["prediction"] == ref["resps"][0][0], doc_id
            assert mine["filtered"][name] == ref["filtered_resps"][0], (doc_id, name)
            assert mine["metrics"][f"exact_match,{name}"] == ref["exact_match"], (doc_id, name)
    for name in ("strict-match", "flexible-extract"):
        key = f"exact_match,{name}"
        assert ours["gsm8k_local"][key] == theirs["gsm8k_local"][key], key
        report.append(f"gsm8k_local {key} {ours['gsm8k_local'][key]:.4f} / {theirs['gsm8k_local'][key]:.4f}")
    for doc_id, mine in our_samples["wikitext_local"].items():
        their_ll = float(their_samples["wikitext_local"][doc_id]["resps"][0][0])
        worst = max(worst, abs(mine["loglikelihood"] - their_ll))
        assert mine["loglikelihood"] == pytest.approx(their_ll, abs=1e-4)
    for key in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert math.isclose(ours["wikitext_local"][key], theirs["wikitext_local"][key], rel_tol=1e-5), key
    report.append(f"wikitext_local word_perplexity {ours['wikitext_local']['word_perplexity,none']:.3f} / "
                  f"{theirs['wikitext_local']['word_perplexity,none']:.3f}")
    print("lmforge / lm-eval:\n  " + "\n  ".join(report))
    print(f"largest log-likelihood difference from lm-eval: {worst:.2e}")
