"""`lmforge eval` end to end on the tiny model and generated task files, and its one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from lmforge.cli import main


def run_eval(tmp_path, model_dir, task_dir, *extra):
    out = tmp_path / "out"
    argv = ["eval", f"model_name_or_path={model_dir}", "tasks=mc_next,sums,wiki", f"include_path={task_dir}",
            f"output_path={out}", "log_samples=true", "batch_size=4", *extra]
    return main(argv), out


def test_eval_writes_results_table_and_samples(tmp_path, tiny_model_dir, task_dir, capsys):
    code, out = run_eval(tmp_path, tiny_model_dir, task_dir)
    assert code == 0
    table = capsys.readouterr().out
    assert "| mc_next | none" in table and "| sums    | strict-match |" in table and "bits_per_byte" in table
    report = json.loads((out / "results.json").read_text())
    mc, sums, wiki = (report["results"][t] for t in ("mc_next", "sums", "wiki"))
    samples = [json.loads(line) for line in (out / "samples_mc_next.jsonl").read_text().splitlines()]
    assert len(samples) == mc["samples"] == 12
    # the aggregate is the mean of the logged per-item scores, and those follow from the logged log-likelihoods
    assert mc["acc,none"] == pytest.approx(sum(s["metrics"]["acc"] for s in samples) / 12)
    for s in samples:
        assert s["metrics"]["acc"] == float(s["prediction"] == s["target"])
        assert len(s["loglikelihoods"]) == len(s["choices"]) == 4 and s["prompt"].endswith("\nAnswer:")
    # pinned for the seed-0 tiny model: an untrained model is at chance on 4 choices
    assert mc["acc,none"] == pytest.approx(0.25) and mc["acc_norm,none"] == pytest.approx(0.25)
    assert mc["acc_stderr,none"] == pytest.approx(math.sqrt(0.25 * 0.75 * 12 / 11 / 12))
    assert sums["exact_match,strict-match"] == 0.0 and sums["samples"] == 6
    generated = [json.loads(line) for line in (out / "samples_sums.jsonl").read_text().splitlines()]
    assert all(g["filtered"]["strict-match"] == "[invalid]" for g in generated)  # no "#### n" in random text
    rolled = [json.loads(line) for line in (out / "samples_wiki.jsonl").read_text().splitlines()]
    total_bytes = sum(len(r["target"].encode()) for r in rolled)
    assert wiki["bits_per_byte,none"] == pytest.approx(-sum(r["loglikelihood"] for r in rolled) / total_bytes / math.log(2))
    assert wiki["bits_per_byte,none"] == pytest.approx(5.84, abs=0.01)
    assert wiki["byte_perplexity,none"] == pytest.approx(2 ** wiki["bits_per_byte,none"])
    assert wiki["bits_per_byte_stderr,none"] == "N/A"
    assert report["n-shot"] == {"mc_next": 0, "sums": 0, "wiki": 0}
    assert report["timing"]["mc_next"]["items_per_second"] > 0


def test_few_shot_and_limit_from_a_config_file(tmp_path, tiny_model_dir, task_dir):
    config = tmp_path / "eval.yaml"
    config.write_text(f"model_name_or_path: {tiny_model_dir}\ntasks: mc_next\ninclude_path: {task_dir}\n"
                      f"num_fewshot: 3\nlimit: 5\noutput_path: {tmp_path / 'few'}\nlog_samples: true\n")
    assert main(["eval", str(config)]) == 0
    report = json.loads((tmp_path / "few" / "results.json").read_text())
    assert report["n-shot"]["mc_next"] == 3 and report["results"]["mc_next"]["samples"] == 5
    first = json.loads((tmp_path / "few" / "samples_mc_next.jsonl").read_text().splitlines()[0])
    assert first["prompt"].count("Question:") == 4


@pytest.mark.parametrize(("extra", "message"), [
    (["num_fewshots=2"], "did you mean 'num_fewshot'"),
    (["learning_rate=1e-4"], "lmforge eval does not use 'learning_rate'"),
    (["tasks=mc_nxt"], "no task, group or tag 'mc_nxt' in include_path"),
    (["batch_size=0"], "batch_size: expects an integer >= 1 or auto, got 0"),
    (["batch_size=auto:4"], "batch_size: 'auto:4' (lm-eval's auto:N"),
    (["fewshot_as_multiturn=true"], "fewshot_as_multiturn: true needs apply_chat_template"),
    (["apply_chat_template=chatmll"], "apply_chat_template: unknown template 'chatmll'"),
])
def test_config_errors_are_one_line(tmp_path, tiny_model_dir, task_dir, capsys, extra, message):
    code, _ = run_eval(tmp_path, tiny_model_dir, task_dir, *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_chat_template_comes_from_the_run_info_else_the_tokenizer_else_an_error(tmp_path, tiny_model_dir, task_dir,
                                                                                capsys):
    import shutil

    from lmforge.eval.tasks.chat_context import chat_template_for
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.config.model_args import ModelArguments
    from lmforge.run_info import write_run_info

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(model)))
    assert chat_template_for(True, None, str(model), tokenizer, "x").name == "auto"  # the tokenizer's own
    write_run_info(model, {"template": "qwen"})
    assert chat_template_for(True, None, str(model), tokenizer, "x").name == "qwen"  # the run's
    assert chat_template_for("chatml", None, str(model), tokenizer, "x").name == "chatml"  # named
    (model / "lmforge_run.json").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    code, _ = run_eval(tmp_path, model, task_dir, "apply_chat_template=true")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "apply_chat_template: " in err and "has no lmforge_run.json naming a template and its tokenizer has no " \
        "chat_template; set apply_chat_template to a template name instead of true" in err


def test_system_instruction_without_a_chat_template_is_written_before_the_prompt(tmp_path, tiny_model_dir,
                                                                                   task_dir):
    code, out = run_eval(tmp_path, tiny_model_dir, task_dir, "tasks=mc_next", "limit=2", "system_instruction=Be brief.")
    first = json.loads((out / "samples_mc_next.jsonl").read_text().splitlines()[0])
    # lm-eval: system_instruction + fewshot_delimiter + description, then the question; choices keep " "
    assert code == 0 and first["prompt"].startswith("Be brief.\n\nPick the next number.\n\nQuestion: ")
    assert first["arguments"][0][1].startswith(" ")


@pytest.mark.parametrize(("entry", "message"), [
    ({"label": "ppl", "type": "lm", "dataset": "d.txt", "apply_chat_template": True},
     "eval_tasks[0].apply_chat_template: is for type downstream entries; this one is type lm"),
    ({"label": "mc", "task": "t", "apply_chat_template": "yes"}, "eval_tasks[0].apply_chat_template: expects true"),
    ({"label": "mc", "task": "t", "fewshot_as_multiturn": True},
     "eval_tasks[0].fewshot_as_multiturn: true needs eval_tasks[0].apply_chat_template: true"),
    ({"label": "mc", "task": "t", "batch_size": "auto:2"}, "eval_tasks[0].batch_size: 'auto:2'"),
    ({"label": "mc", "task": "t", "batch_size": 0}, "eval_tasks[0].batch_size: expects an integer >= 1 or auto"),
])
def test_evaluator_chat_and_batch_keys_are_checked(entry, message):
    from lmforge.config.evaluator_args import parse_eval_tasks
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_eval_tasks([entry])
    assert message in str(err.value)


def test_evaluator_entries_take_chat_keys_and_batch_size_auto():
    from lmforge.config.evaluator_args import parse_eval_tasks

    (spec,) = parse_eval_tasks([{"label": "mc", "task": "t", "apply_chat_template": True, "batch_size": "auto"}])
    assert spec.apply_chat_template and spec.multiturn and spec.batch_size == "auto"
    (spec,) = parse_eval_tasks([{"label": "mc", "task": "t", "apply_chat_template": True,
                                 "fewshot_as_multiturn": False}])
    assert not spec.multiturn


def test_batch_size_auto_is_passed_on_unchanged(tmp_path, tiny_model_dir):
    from lmforge.eval.runner import load_eval_config

    cfg = load_eval_config(None, [f"model_name_or_path={tiny_model_dir}", "batch_size=auto"])
    assert cfg.eval.batch_size == "auto"
    assert load_eval_config(None, [f"model_name_or_path={tiny_model_dir}", "batch_size=3"]).eval.batch_size == 3


def test_data_errors_name_the_task_file(tmp_path, tiny_model_dir, task_dir, capsys):
    (task_dir / "data" / "sums.jsonl").unlink()
    code, _ = run_eval(tmp_path, tiny_model_dir, task_dir)
    err = capsys.readouterr().err
    assert code == 2 and "sums.yaml: dataset_kwargs.data_files: the test file" in err and "does not exist" in err
    (task_dir / "sums.yaml").write_text((task_dir / "sums.yaml").read_text().replace("{{a}}", "{{c}}"))
    (task_dir / "data" / "sums.jsonl").write_text('{"a": 1, "b": 2, "answer": "#### 3"}\n')
    code, _ = run_eval(tmp_path, tiny_model_dir, task_dir)
    err = capsys.readouterr().err
    assert code == 1 and "doc_to_text: template 'Q: {{c}} plus {{b}}?\\nA:' on record 0: 'c' is undefined" in err


def test_help_answers_without_importing_torch():
    code = ("import sys\nfrom lmforge.cli import main\nrc = main(['eval', '--help'])\n"
            "print('RESULT', rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "lmforge eval CONFIG" in done.stdout and done.stdout.strip().splitlines()[-1] == "RESULT 0 False False"


def test_eval_keys_in_a_training_or_chat_config_are_refused_not_ignored(tmp_path, tiny_model_dir):
    from lmforge.config.loader import load_config, load_inference_config
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'tasks', 'limit' are `lmforge eval` keys; a training run does not read"):
        load_config(None, [f"model_name_or_path={tiny_model_dir}", f"output_dir={tmp_path}", "tasks=x", "limit=3"])
    with pytest.raises(ConfigError, match=r"'num_fewshot' is an `lmforge eval` key; chat, api and export"):
        load_inference_config(None, [f"model_name_or_path={tiny_model_dir}", "num_fewshot=5"])


def test_groups_aggregate_their_tasks_and_tags_select_them(tmp_path, tiny_model_dir, task_dir):
    rows = (task_dir / "data" / "mc_test.jsonl").read_text().splitlines()[:6]
    (task_dir / "data" / "mc_half.jsonl").write_text("\n".join(rows) + "\n")
    (task_dir / "mc_half.yaml").write_text((task_dir / "mc_next.yaml").read_text()
                                           .replace("task: mc_next", "task: mc_half\ntag: [halves]")
                                           .replace("mc_test.jsonl", "mc_half.jsonl"))
    (task_dir / "both.yaml").write_text("group: both\ntask: [mc_next, halves]\naggregate_metric_list:\n"
                                        "  - metric: acc\n    weight_by_size: true\n")
    out = tmp_path / "groups"
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", "tasks=both", f"include_path={task_dir}",
                 f"output_path={out}"]) == 0
    report = json.loads((out / "results.json").read_text())
    full, half, both = (report["results"][n] for n in ("mc_next", "mc_half", "both"))
    assert list(report["results"]) == ["both", "mc_next", "mc_half"] and report["group_subtasks"]["both"] == ["mc_next", "mc_half"]
    assert both["acc,none"] == pytest.approx((full["acc,none"] * 12 + half["acc,none"] * 6) / 18)
    pooled = math.sqrt((11 * 12 * full["acc_stderr,none"] ** 2 + 5 * 6 * half["acc_stderr,none"] ** 2) / 16 / 18)
    assert both["acc_stderr,none"] == pytest.approx(pooled) and both["samples"] == 18
    assert "acc_norm,none" not in both  # only the metrics the group lists


def test_an_adapter_is_merged_and_scores_as_the_merged_model(tmp_path, tiny_model_dir, task_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter changes the scores
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = tmp_path / "merged"
    peft_model.merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(merged)

    def lls(*model_keys):
        out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        assert main(["eval", *model_keys, "tasks=mc_next", f"include_path={task_dir}", f"output_path={out}",
                     "log_samples=true", "limit=4"]) == 0
        return [ll for line in (out / "samples_mc_next.jsonl").read_text().splitlines()
                for ll in json.loads(line)["loglikelihoods"]]

    with_adapter = lls(f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={tmp_path / 'adapter'}")
    assert with_adapter == pytest.approx(lls(f"model_name_or_path={merged}"), abs=1e-4)
    assert with_adapter != pytest.approx(lls(f"model_name_or_path={tiny_model_dir}"), abs=1e-3)


def test_a_bad_record_stops_before_the_model_loads(tmp_path, tiny_model_dir, task_dir, capsys, monkeypatch):
    """Every task's items are built first: a template error or a bad record costs no model load."""
    import lmforge.model.loader as loader

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the task files were checked")

    monkeypatch.setattr(loader, "load_model", no_load)
    bad = tmp_path / "bad.yaml"
    bad.write_text((task_dir / "mc_next.yaml").read_text().replace("{{question}}", "{{question}"))
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"tasks={bad}"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmforge: error: {bad}: doc_to_text: Jinja syntax error") and "Traceback" not in err
