"""lmforge eval agrees with lm-evaluation-harness (`lm_eval --model hf`, a test dependency) on the same tiny model
and the same local task files: identical prompts, per-item log-likelihoods within 1e-4, identical generations,
and identical acc / acc_norm / exact_match, at 0 and 5 shots. Both run here, offline."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from lmforge.cli import main

pytestmark = pytest.mark.slow
pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install -e '.[test]'")


def lm_eval(model_dir: Path, task_dir: Path, out: Path, tasks: str, shots: int | None,
            leaves: str | None = None, extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(results, {task: samples by doc_id}) of one `lm_eval run --model hf`; `extra`: more flags."""
    argv = ["--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", tasks,
            "--include_path", str(task_dir), "--log_samples", "--output_path", str(out), "--batch_size", "4",
            "--device", "cpu", *extra] + (["--num_fewshot", str(shots)] if shots is not None else [])
    run_lm_eval(argv, out)
    (results_file,) = out.rglob("results_*.json")
    samples = {}
    for task in (leaves or tasks).split(","):
        (file,) = out.rglob(f"samples_{task}_*.jsonl")
        samples[task] = {}
        for line in file.read_text().splitlines():
            record = json.loads(line)
            samples[task].setdefault(record["doc_id"], record)  # one record per filter; the first is enough here
    return json.loads(results_file.read_text())["results"], samples


def run_lm_eval(argv: list[str], out: Path) -> None:
    """lm-eval's own CLI (`lm_eval run ...`), in this process: ~8 s of imports saved per run against a subprocess.
    Its data files are local and the model a local directory, so nothing reaches for the network."""
    from lm_eval._cli.harness import HarnessCLI

    cli = HarnessCLI()
    args = cli._parser.parse_args(["run", *argv])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        cli.execute(args)
    finally:  # lm-eval configures logging for a CLI process; leave this one's as it was
        root.handlers[:], root.level = handlers, level


def lmforge(model_dir: Path, task_dir: Path, out: Path, tasks: str, shots: int | None,
            leaves: str | None = None, extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    argv = ["eval", f"model_name_or_path={model_dir}", f"tasks={tasks}", f"include_path={task_dir}",
            f"output_path={out}", "log_samples=true", "batch_size=4", *extra] + ([f"num_fewshot={shots}"] if shots is not None else [])
    assert main(argv) == 0
    samples = {task: {json.loads(line)["doc_id"]: json.loads(line)
                      for line in (out / f"samples_{task}.jsonl").read_text().splitlines()}
               for task in (leaves or tasks).split(",")}
    return json.loads((out / "results.json").read_text())["results"], samples


def compare_multiple_choice(ours: dict, theirs: dict) -> float:
    worst = 0.0
    assert sorted(ours) == sorted(theirs)
    for doc_id, mine in ours.items():
        ref = theirs[doc_id]
        args = [ref["arguments"][f"gen_args_{i}"] for i in range(len(mine["choices"]))]
        assert [[a["arg_0"], a["arg_1"]] for a in args] == mine["arguments"]  # the same prompts, character for character
        their_lls = [float(r[0][0]) for r in ref["resps"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(mine["loglikelihoods"], their_lls)))
        assert mine["loglikelihoods"] == pytest.approx(their_lls, abs=1e-4)
        assert [str(g) for g in mine["is_greedy"]] == [r[0][1] for r in ref["resps"]]
        assert mine["metrics"]["acc"] == ref["acc"] and mine["metrics"]["acc_norm"] == ref["acc_norm"]
    return worst


def test_agreement_with_lm_evaluation_harness(tmp_path, tiny_model_dir, task_dir):
    ours, our_samples = lmforge(tiny_model_dir, task_dir, tmp_path / "ours0", "mc_next,sums,wiki", None)
    theirs, their_samples = lm_eval(tiny_model_dir, task_dir, tmp_path / "theirs0", "mc_next,sums,wiki", None)
    worst = compare_multiple_choice(our_samples["mc_next"], their_samples["mc_next"])
    for key in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
        assert ours["mc_next"][key] == pytest.approx(theirs["mc_next"][key], abs=1e-12), key
    for doc_id, mine in our_samples["sums"].items():  # greedy generations and their regex-filtered answers
        ref = their_samples["sums"][doc_id]
        assert mine["prediction"] == ref["resps"][0][0] and mine["filtered"]["strict-match"] == ref["filtered_resps"][0]
        assert mine["metrics"]["exact_match,strict-match"] == ref["exact_match"]
    assert ours["sums"]["exact_match,strict-match"] == theirs["sums"]["exact_match,strict-match"]
    for doc_id, mine in our_samples["wiki"].items():
        their_ll = float(their_samples["wiki"][doc_id]["resps"][0][0])
        worst = max(worst, abs(mine["loglikelihood"] - their_ll))
        assert mine["loglikelihood"] == pytest.approx(their_ll, abs=1e-4)
    for key in ("bits_per_byte,none", "byte_perplexity,none", "word_perplexity,none"):
        assert math.isclose(ours["wiki"][key], theirs["wiki"][key], rel_tol=1e-5), key
    # five shots drawn from the train split with lm-eval's seed: the same shots, hence the same prompts
    ours5, our_samples5 = lmforge(tiny_model_dir, task_dir, tmp_path / "ours5", "mc_next", 5)
    theirs5, their_samples5 = lm_eval(tiny_model_dir, task_dir, tmp_path / "theirs5", "mc_next", 5)
    worst = max(worst, compare_multiple_choice(our_samples5["mc_next"], their_samples5["mc_next"]))
    assert ours5["mc_next"]["acc,none"] == theirs5["mc_next"]["acc,none"]
    assert ours5["mc_next"]["acc_norm,none"] == theirs5["mc_next"]["acc_norm,none"]
    print(f"largest log-likelihood difference from lm-eval: {worst:.2e}")


def test_agreement_on_csv_letters_loglikelihood_and_self_shots(tmp_path, tiny_model_dir, variety_dir):
    tasks = "mc_pair,ll_next"  # the group mc_pair = letters + say; each task with its own num_fewshot (2, none, 3)
    ours, our_samples = lmforge(tiny_model_dir, variety_dir, tmp_path / "ours", tasks, None, "letters,say,ll_next")
    theirs, their_samples = lm_eval(tiny_model_dir, variety_dir, tmp_path / "theirs", tasks, None, "letters,say,ll_next")
    for key in ("acc,none", "acc_stderr,none", "acc_norm,none"):  # size-weighted / plain mean, pooled stderr
        assert ours["mc_pair"][key] == pytest.approx(theirs["mc_pair"][key], abs=1e-12), key
    for task in ("letters", "say"):
        compare_multiple_choice(our_samples[task], their_samples[task])
        for key in ("acc,none", "acc_norm,none"):
            assert ours[task][key] == theirs[task][key], (task, key)
    def argmax(values):
        return max(range(len(values)), key=values.__getitem__)

    # choices of 1 to 30 characters: length normalisation changes the pick, so acc_norm is tested, not a copy of acc
    assert any(argmax(s["loglikelihoods"]) != argmax([ll / len(c) for ll, c in zip(s["loglikelihoods"], s["choices"])])
               for s in our_samples["say"].values())
    for doc_id, mine in our_samples["ll_next"].items():
        ref = their_samples["ll_next"][doc_id]
        assert mine["arguments"] == [[ref["arguments"]["gen_args_0"]["arg_0"], ref["arguments"]["gen_args_0"]["arg_1"]]]
        assert mine["loglikelihoods"][0] == pytest.approx(float(ref["resps"][0][0][0]), abs=1e-4)
        assert mine["metrics"]["acc"] == ref["acc"]
    assert ours["ll_next"]["perplexity,none"] == pytest.approx(theirs["ll_next"]["perplexity,none"], rel=1e-5)
    assert ours["ll_next"]["acc,none"] == theirs["ll_next"]["acc,none"]
