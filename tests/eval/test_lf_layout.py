"""LLaMA-Factory's eval layout (task_dir / task: mmlu_test / n_shot / lang): prompts, scores, errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmforge.cli import main
from lmforge.eval.tasks.lf_layout import LANG_PROMPTS, format_example, lf_messages

HEADER = "question,A,B,C,D,answer\n"


def write_lf_dir(root, *, header: bool = True):
    """task_dir/mmlu with two subjects (STEM and Humanities), dev/val/test CSVs and mapping.json."""
    mmlu = root / "mmlu"
    mmlu.mkdir(parents=True)
    rnd = random.Random(7)
    for subject, n in (("arith", 7), ("poetry", 5)):
        for suffix, rows in (("dev", 4), ("val", 3), ("test", n)):
            lines = []
            for _ in range(rows):
                x = rnd.randrange(2, 60)
                lines.append(f"\"What is {x}, plus one?\",{x + 1},{x + 2},{x - 1},{x * 2},{rnd.choice('ABCD')}")
            (mmlu / f"{subject}_{suffix}.csv").write_text((HEADER if header else "") + "\n".join(lines) + "\n")
    mapping = {"arith": {"name": "arithmetic", "category": "STEM"},
               "poetry": {"name": "poetry", "category": "Humanities"}}
    (mmlu / "mapping.json").write_text(json.dumps(mapping))
    return root


@pytest.fixture
def lf_dir(tmp_path):
    return write_lf_dir(tmp_path / "evaluation")


def run(tmp_path, model_dir, lf_dir, *extra):
    out = tmp_path / "out"
    argv = ["eval", f"model_name_or_path={model_dir}", f"task_dir={lf_dir}", "task=mmlu_test", "batch_size=3",
            f"output_path={out}", "log_samples=true", *extra]
    return main(argv), out


def test_prompt_is_llamafactory_wording():
    row = {"question": "Q?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "B"}
    assert format_example(row, LANG_PROMPTS["en"]) == ("Q?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:", "B")
    turns = lf_messages(row, [row], "algebra", LANG_PROMPTS["en"])
    assert turns == [("user", "The following are multiple choice questions (with answers) about algebra.\n\n"
                              "Q?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"),
                     ("assistant", "B"), ("user", "Q?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")]
    assert lf_messages(row, [], "数学", LANG_PROMPTS["zh"])[0][1].endswith("\n答案：")


@pytest.mark.parametrize("n_shot", [0, 2])
def test_accuracy_equals_direct_logits(tmp_path, tiny_model_dir, lf_dir, capsys, n_shot):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out = run(tmp_path, tiny_model_dir, lf_dir, f"n_shot={n_shot}")
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]
    records = [json.loads(line) for line in (out / "samples_mmlu_test.jsonl").read_text().splitlines()]
    assert len(records) == 12
    # the oracle: the tokenizer's own chat template, a plain forward pass, the logits of "A".."D" at the end
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    letters = [tokenizer.encode(c, add_special_tokens=False)[-1] for c in "ABCD"]
    hits: dict[str, list[bool]] = {"arith": [], "poetry": []}
    for r in records:
        assert len(r["prompt"]) == 2 * n_shot + 1
        messages = [{"role": role, "content": content} for role, content in r["prompt"]]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1, letters]
        assert r["choice_logits"] == pytest.approx(logits.tolist(), abs=1e-4)
        predicted = "ABCD"[int(torch.argmax(logits))]
        assert r["prediction"] == predicted
        hits[r["subject"]].append(predicted == r["target"])
    arith, poetry = (sum(h) / len(h) for h in hits.values())
    average = (sum(hits["arith"]) + sum(hits["poetry"])) / 12
    assert results["mmlu_test:arith"]["acc,none"] == pytest.approx(arith)
    assert results["mmlu_test_STEM"]["acc,none"] == pytest.approx(arith)
    assert results["mmlu_test_Humanities"]["acc,none"] == pytest.approx(poetry)
    assert results["mmlu_test"]["acc,none"] == pytest.approx(average)
    assert "mmlu_test_Other" not in results  # empty categories are left out, as LLaMA-Factory printed them
    assert f"{'Average':>15}: {100 * average:.2f}" in printed and f"{'STEM':>15}: {100 * arith:.2f}" in printed
    print(f"n_shot={n_shot}: average {average:.4f} arith {arith:.4f} poetry {poetry:.4f}")


def test_headerless_csv_reads_by_position(tmp_path, tiny_model_dir):
    lf_dir = write_lf_dir(tmp_path / "plain", header=False)
    code, out = run(tmp_path, tiny_model_dir, lf_dir, "n_shot=1", "task=mmlu_validation", "limit=2")
    assert code == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["mmlu_validation"]["samples"] == 4


@pytest.mark.parametrize(("breakage", "extra", "message"), [
    (lambda d: (d / "mmlu" / "poetry_test.csv").unlink(), [], "poetry_test.csv: missing; mapping.json lists subject"),
    (lambda d: (d / "mmlu" / "mapping.json").unlink(), [], "mapping.json: missing"),
    (lambda d: None, ["task_dir=/nonexistent/evaluation"], "task_dir: /nonexistent/evaluation is not a directory"),
    (lambda d: None, ["task=mmlu_tset"], "is not <task>_<split>"),
    (lambda d: None, ["task=mmlx_test"], "no folder 'mmlx' in task_dir"),
    (lambda d: None, ["lang=fr"], "lang: unknown language 'fr'"),
    (lambda d: None, ["n_shot=-1"], "n_shot must be >= 0"),
    (lambda d: (d / "mmlu" / "arith_test.csv").write_text(HEADER + "Q,1,2,3,4,E\n"), [],
     "arith_test.csv: line 2: answer 'E' is not one of A, B, C, D"),
    (lambda d: (d / "mmlu" / "arith_dev.csv").write_text(HEADER), ["n_shot=1"], "arith_dev.csv: no rows"),
])
def test_bad_input_is_one_clear_error(tmp_path, tiny_model_dir, lf_dir, capsys, breakage, extra, message):
    breakage(lf_dir)
    code, _ = run(tmp_path, tiny_model_dir, lf_dir, *extra)
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err, err  # DataError 1, ConfigError 2


def test_lang_zh_words_the_prompt_in_chinese(tmp_path, tiny_model_dir, lf_dir):
    code, out = run(tmp_path, tiny_model_dir, lf_dir, "n_shot=1", "lang=zh", "limit=1")
    assert code == 0
    records = [json.loads(line) for line in (out / "samples_mmlu_test.jsonl").read_text().splitlines()]
    first_user, shot_answer, question = (content for _, content in records[0]["prompt"])
    assert first_user.startswith("以下是中国arithmetic考试的单项选择题，请选出其中的正确答案。\n\n")
    assert question.endswith("\n答案：") and shot_answer in "ABCD" and len(records) == 2
