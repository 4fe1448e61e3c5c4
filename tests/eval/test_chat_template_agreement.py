"""`lmforge eval apply_chat_template=true` agrees with `lm_eval --model hf --apply_chat_template` (0.4.13): the
same tiny model, whose tokenizer's chat_template is ChatML and whose lmforge_run.json names lmforge's `chatml`
template, and the same local task files. Identical prompts (system turn = system_instruction + description, shots
as turns or as one user message, no target delimiter before a choice), per-item log-likelihoods within 1e-4,
identical greedy generations and identical acc / acc_norm / exact_match. Both run here, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmforge.run_info import write_run_info
from tests.eval import test_lm_eval_agreement as agreement

pytestmark = pytest.mark.slow
pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install -e '.[test]'")

SYSTEM = "Answer with the number only."


def lm_eval(model_dir: Path, task_dir: Path, out: Path, tasks: str, extra: list[str]) -> tuple[dict, dict]:
    """The agreement test's `lm_eval --model hf` run, with --apply_chat_template."""
    return agreement.lm_eval(model_dir, task_dir, out, tasks, None, extra=("--apply_chat_template", *extra))


def lmforge(model_dir: Path, task_dir: Path, out: Path, tasks: str, extra: list[str]) -> tuple[dict, dict]:
    """The agreement test's `lmforge eval` run, with apply_chat_template=true."""
    return agreement.lmforge(model_dir, task_dir, out, tasks, None, extra=("apply_chat_template=true", *extra))


compare_multiple_choice = agreement.compare_multiple_choice


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
