"""The README demo end to end: pretrain, SFT with an in-loop evaluator, `lmforge eval` on the saved model, then
`lmforge check` of it (every default probe, none FAILs). About two minutes on 2 CPU cores.

Thresholds (measured at seed 0 on a 2-core CPU: exact match 0% at step 0 -> 99% at the last step, eval loss
4.717 -> 0.024): accuracy after SFT >= 60%, before it <= 5%; the last SFT eval loss at most half the first. The
in-loop evaluator's last figure equals `lmforge eval`'s on the saved model exactly (same task file, template,
greedy answers).
"""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main


@pytest.mark.slow
def test_demo_learns_the_task(demo_result):
    result = demo_result
    root = result.sft_dir.parent
    assert result.accuracy_before <= 0.05
    assert result.accuracy_after >= 0.60
    assert result.accuracy_after == result.accuracy_standalone
    log = [json.loads(line) for line in (result.sft_dir / "trainer_log.jsonl").read_text().splitlines()]
    scored = [(row["step"], row["eval/shift/exact_match"]) for row in log if "eval/shift/exact_match" in row]
    assert [step for step, _ in scored] == [0, 150, 300, 450, 600, scored[-1][0]] and scored[-1][0] > 600
    assert (result.sft_dir / "eval_shift_exact_match.png").is_file()
    assert result.sft_eval_loss_last <= 0.5 * result.sft_eval_loss_first
    assert (result.sft_dir / "training_loss.png").is_file()
    assert (result.sft_dir / "eval_loss.png").is_file()
    # The demo's YAMLs are real configs: the same file trains again through the CLI.
    assert (root / "sft.yaml").is_file()
    # It ends by chatting with the model through the chat/api engine, from the chat.yaml it prints.
    answers = {r["instruction"]: r["output"] for r in json.loads((root / "data" / "shift_heldout.json").read_text())}
    assert result.chat_config.is_file() and result.chat_prompt in answers
    assert result.chat_answer.startswith("Shifted: ")
    # And `lmforge check` of the fine-tuned model, from the check.yaml the demo writes: every default probe runs
    # and none FAILs (issue 20, line 3), so the check's exit code gates a pipeline.
    assert main(["check", str(result.check_config)]) == 0
    report = json.loads((root / "check" / "check_report.json").read_text())
    verdicts = {r["name"]: r["verdict"] for r in report["results"]}
    assert set(verdicts) == set(report["probes"]) and len(verdicts) == 7, verdicts
    assert "FAIL" not in verdicts.values(), verdicts
    assert verdicts["prompt_edits"] == "PASS" and verdicts["termination"] == "PASS", verdicts
    # the report names every edited prompt and the held-out record it came from
    edits = next(r for r in report["results"] if r["name"] == "prompt_edits")["details"]["edits"]
    assert edits and all(e["edited_prompt"] and e["source"].startswith(str(root / "data")) for e in edits)


def test_demo_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--output-dir" in capsys.readouterr().out
