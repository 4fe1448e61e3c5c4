"""`lmforge eval apply_chat_template=true` agrees with `lm_eval --model hf --apply_chat_template` (0.4.13): the
same tiny model, whose tokenizer's chat_template is ChatML and whose lmforge_run.json names lmforge's `chatml`
template, and the same local task files. Identical prompts (system turn = system_instruction + description, shots
as turns or as one user message, no target delimiter before a choice), per-item log-likelihoods within 1e-4,
identical greedy generations and identical acc / acc_norm / exact_match. Both run here, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.run_info import write_run_info

pytestmark = pytest.mark.slow
pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install -e '.[test]'")

SYSTEM = "Answer with the number only."


def lm_eval(model_dir: Path, task_dir: Path, out: Path, tasks: str, extra: list[str]) -> tuple[dict, dict]:
    """(results, {task: samples by doc_id}) of one `lm_eval --model hf` run in a subprocess."""
    executable = shutil.which("lm_eval", path=str(Path(sys.executable).parent)) or shutil.which("lm_eval")
    argv = [executable, "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", tasks,
            "--include_path", str(task_dir), "--log_samples", "--output_path", str(out), "--batch_size", "4",
            "--device", "cpu", "--apply_chat_template", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out / "hf_cache"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    samples = {}
    for task in tasks.split(","):
        (file,) = out.rglob(f"samples_{task}_*.jsonl")
        samples[task] = {}
        for line in file.read_text().splitlines():
            record = json.loads(line)
            samples[task].setdefault(record["doc_id"], record)
    return json.loads(results_file.read_text())["results"], samples


def lmforge(model_dir: Path, task_dir: Path, out: Path, tasks: str, extra: list[str]) -> tuple[dict, dict]:
    argv = ["eval", f"model_name_or_path={model_dir}", f"tasks={tasks}", f"include_path={task_dir}",
            f"output_path={out}", "log_samples=true", "batch_size=4", "apply_chat_template=true", *extra]
    assert main(argv) == 0
    samples = {task: {json.loads(line)["doc_id"]: json.loads(line)
                      for line in (out / f"samples_{task}.jsonl").read_text().splitlines()}
               for task in tasks.split(",")}
    return json.loads((out / "results.json").read_text())["results"], samples


def compare_multiple_choice(ours: dict, theirs: dict) -> float:
    worst = 0.0
    assert sorted(ours) == sorted(theirs)
    for doc_id, mine in ours.items():
        ref = theirs[doc_id]
        args = [ref["arguments"][f"gen_args_{i}"] for i in range(len(mine["choices"]))]
        assert [[a["arg_0"], a["arg_1"]] for a in args] == mine["arguments"]  # character for character
        their_lls = [float(r[0][0]) for r in ref["resps"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(mine["loglikelihoods"], their_lls)))
        assert mine["loglikelihoods"] == pytest.approx(their_lls, abs=1e-4)
        assert [str(g) for g in mine["is_greedy"]] == [r[0][1] for r in ref["resps"]]
        assert mine["metrics"]["acc"] == ref["acc"] and mine["metrics"]["acc_norm"] == ref["acc_norm"]
    return worst


@pytest.fixture
def chat_model_dir(tmp_path, tiny_model_dir) -> Path:
    """tiny-qwen2 (tokenizer chat_template: ChatML) as a run lmforge trained with template chatml."""
    model = shutil.copytree(tiny_model_dir, tmp_path / "chat-model")
    write_run_info(model, {"template": "chatml"})
    return model


def test_chat_prompts_agree_with_lm_evaluation_harness(tmp_path, chat_model_dir, task_dir):
    # two shots as turns (lm-eval 0.4.13's default with --apply_chat_template), a system_instruction joined to the
    # description, a multiple_choice task and a generate_until task
    tasks = "mc_next,sums"
    ours, our_samples = lmforge(chat_model_dir, task_dir, tmp_path / "ours", tasks,
                                ["num_fewshot=2", f"system_instruction={SYSTEM}"])
    theirs, their_samples = lm_eval(chat_model_dir, task_dir, tmp_path / "theirs", tasks,
                                    ["--num_fewshot", "2", "--system_instruction", SYSTEM])
    prompt = our_samples["mc_next"][0]["prompt"]
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}\n\nPick the next number.\n\n<|im_end|>\n")
    assert prompt.count("<|im_start|>assistant\n") == 3 and prompt.endswith("<|im_start|>assistant\n")
    assert our_samples["mc_next"][0]["arguments"][0][1][:1] != " "  # no target delimiter after the header
    worst = compare_multiple_choice(our_samples["mc_next"], their_samples["mc_next"])
    for key in ("acc,none", "acc_norm,none"):
        assert ours["mc_next"][key] == theirs["mc_next"][key], key
    for doc_id, mine in our_samples["sums"].items():
        ref = their_samples["sums"][doc_id]
        assert mine["prompt"] == ref["arguments"]["gen_args_0"]["arg_0"]
        assert mine["prediction"] == ref["resps"][0][0] and mine["filtered"]["strict-match"] == ref["filtered_resps"][0]
        assert mine["metrics"]["exact_match,strict-match"] == ref["exact_match"]
    assert ours["sums"]["exact_match,strict-match"] == theirs["sums"]["exact_match,strict-match"]

    # fewshot_as_multiturn false: the shots and the question in one user message
    ours1, our_samples1 = lmforge(chat_model_dir, task_dir, tmp_path / "ours1", "mc_next",
                                  ["num_fewshot=2", "fewshot_as_multiturn=false"])
    theirs1, their_samples1 = lm_eval(chat_model_dir, task_dir, tmp_path / "theirs1", "mc_next",
                                      ["--num_fewshot", "2", "--fewshot_as_multiturn", "false"])
    assert our_samples1["mc_next"][0]["prompt"].count("<|im_start|>user\n") == 1
    worst = max(worst, compare_multiple_choice(our_samples1["mc_next"], their_samples1["mc_next"]))
    for key in ("acc,none", "acc_norm,none"):
        assert ours1["mc_next"][key] == theirs1["mc_next"][key], key
    print(f"largest log-likelihood difference from lm-eval (chat template): {worst:.2e}")


def test_in_loop_evaluator_renders_with_the_training_template_as_lmforge_eval_does(tmp_path, chat_model_dir,
                                                                                    task_dir):
    """An eval_tasks entry with apply_chat_template scores what `lmforge eval apply_chat_template=true` scores on
    the saved run (its lmforge_run.json names the same template)."""
    from lmforge.config.evaluator_args import parse_eval_tasks
    from lmforge.config.model_args import ModelArguments
    from lmforge.data.templates import resolve_template
    from lmforge.eval.tasks import build_items
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.train.callbacks.evaluators import EvaluatorCallback
    from transformers import AutoModelForCausalLM

    specs = parse_eval_tasks([{"label": "mc", "task": "mc_next", "include_path": str(task_dir), "num_fewshot": 2,
                               "apply_chat_template": True, "fewshot_as_multiturn": False, "batch_size": 4}])
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(chat_model_dir)))
    callback = EvaluatorCallback(specs, tokenizer, resolve_template("chatml", tokenizer))
    model = AutoModelForCausalLM.from_pretrained(chat_model_dir, dtype="float32")
    metrics = callback.evaluate(model)
    ours, samples = lmforge(chat_model_dir, task_dir, tmp_path / "ours", "mc_next",
                            ["num_fewshot=2", "fewshot_as_multiturn=false"])
    ((_, selection),) = callback.selections
    items = build_items(selection.specs[0], num_fewshot=2, renderer=callback.renderers["mc"])
    assert [it.requests for it in items] == [[tuple(a) for a in samples["mc_next"][i]["arguments"]]
                                             for i in range(len(items))]
    assert metrics["eval/mc/acc"] == ours["mc_next"]["acc,none"]
    assert metrics["eval/mc/acc_norm"] == ours["mc_next"]["acc_norm,none"]
