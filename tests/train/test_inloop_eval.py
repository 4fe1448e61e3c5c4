"""Evaluators during training (`eval_tasks`): the in-loop figure at the end equals `lmforge eval` on the saved
model, metrics reach trainer_log.jsonl as eval/<label>/<metric>, and a bad entry is a one-line error naming it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config.evaluator_args import parse_eval_tasks
from lmforge.errors import ConfigError


def write_tasks(root: Path) -> Path:
    """Task YAMLs with their jsonl data, as lm-eval reads them: mc_next (multiple choice: the next number of 4
    options) and wiki (loglikelihood_rolling: bits per byte, a figure that moves with every training step)."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(7)
    rows = []
    for _ in range(10):
        x = rnd.randrange(10, 90)
        options = [str(x + 1), str(x + 3), str(x - 2), str(x + 10)]
        rnd.shuffle(options)
        rows.append({"question": f"What comes after {x}?", "choices": options, "answer": options.index(str(x + 1))})
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mc_next.yaml").write_text(
        "task: mc_next\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: answer\ndoc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    texts = root / "wiki.jsonl"
    texts.write_text("".join(json.dumps({"text": f"The number is {i}. " * (1 + i % 3)}) + "\n" for i in range(6)))
    (root / "wiki.yaml").write_text(
        "task: wiki\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {texts}\n"
        'test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: bits_per_byte\n"
    )
    return root


def train_config(path: Path, model: Path, data: Path, output: Path, **extra) -> Path:
    cfg = dict(stage="sft", model_name_or_path=str(model), dataset="numbers", dataset_dir=str(data), template="qwen",
               cutoff_len=64, finetuning_type="lora", lora_rank=4, per_device_train_batch_size=4, max_steps=4,
               learning_rate=5e-3, logging_steps=1, save_strategy="no", seed=0, dataloader_num_workers=0,
               output_dir=str(output), report_to="none", val_size=0.1, eval_strategy="steps", eval_steps=2,
               plot_loss=True)
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_inloop_figure_equals_lmforge_eval_on_the_saved_model(tmp_path, tiny_model_dir, data_dir):
    tasks = write_tasks(tmp_path / "tasks")
    out = tmp_path / "run"
    entry = {"label": "mc", "type": "downstream", "task": "mc_next", "include_path": str(tasks), "limit": 8,
             "num_fewshot": 1, "batch_size": 4}
    wiki = {"label": "wiki", "task": str(tasks / "wiki.yaml")}  # a task YAML path; type downstream by default
    heldout = {"label": "heldout", "type": "lm", "dataset": str(tasks / "wiki.jsonl")}
    assert main(["train", str(train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                                           eval_tasks=[entry, wiki, heldout]))]) == 0
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mc/acc" in r]
    assert [r["step"] for r in evals] == [2, 4]  # every eval_steps, the last step once
    assert set(evals[-1]) >= {"eval/mc/acc", "eval/mc/acc_norm"}
    assert (out / "eval_mc_acc.png").is_file()  # plot_loss draws each evaluator metric

    standalone = tmp_path / "standalone"
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={out}", "tasks=mc_next",
                 f"include_path={tasks}", "limit=8", "num_fewshot=1", f"output_path={standalone}"]) == 0
    report = json.loads((standalone / "results.json").read_text())["results"]["mc_next"]
    assert evals[-1]["eval/mc/acc"] == pytest.approx(report["acc,none"], abs=1e-12)
    assert evals[-1]["eval/mc/acc_norm"] == pytest.approx(report["acc_norm,none"], abs=1e-12)

    # bits per byte moves with every step: the in-loop figure is the trained model's (LoRA unmerged, in eval
    # mode), equal to the saved model's standalone figure and to neither the base model's nor step 2's
    wikis = [r["eval/wiki/bits_per_byte"] for r in rows if "eval/wiki/bits_per_byte" in r]
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={out}",
                 f"tasks={tasks / 'wiki.yaml'}", f"output_path={standalone}"]) == 0
    trained = json.loads((standalone / "results.json").read_text())["results"]["wiki"]["bits_per_byte,none"]
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"tasks={tasks / 'wiki.yaml'}",
                 f"output_path={standalone}"]) == 0
    base = json.loads((standalone / "results.json").read_text())["results"]["wiki"]["bits_per_byte,none"]
    assert wikis[-1] == pytest.approx(trained, rel=1e-5)
    assert abs(wikis[-1] - base) > 1e-3 and abs(wikis[-1] - wikis[0]) > 1e-3

    # type lm: the held-out text's loss, perplexity and bits per byte, as `lmforge eval tasks=lm:<file>` gives them
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={out}",
                 f"tasks=lm:{tasks / 'wiki.jsonl'}", f"output_path={standalone}"]) == 0
    lm = json.loads((standalone / "results.json").read_text())["results"][f"lm:{tasks / 'wiki.jsonl'}"]
    for metric in ("loss", "perplexity", "bits_per_byte"):
        assert evals[-1][f"eval/heldout/{metric}"] == pytest.approx(lm[f"{metric},none"], rel=1e-5)
    assert (out / "eval_heldout_loss.png").is_file()


def test_eval_strategy_epoch_scores_at_each_epoch_end_once(tmp_path, tiny_model_dir, data_dir):
    """eval_strategy epoch: at each epoch's end once; an entry's own eval_interval instead of it; eval_on_start: all
    entries before the first step too."""
    tasks = write_tasks(tmp_path / "tasks")
    out = tmp_path / "run"
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out, eval_strategy="epoch",
                          per_device_train_batch_size=12, max_steps=-1, num_train_epochs=2, eval_on_start=True,
                          eval_tasks=[{"label": "wiki", "task": str(tasks / "wiki.yaml")},
                                      {"label": "often", "task": str(tasks / "wiki.yaml"), "eval_interval": 2}])
    assert main(["train", str(config)]) == 0
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/wiki/bits_per_byte" in r] == [0, 3, 6]
    assert [r["step"] for r in rows if "eval/often/bits_per_byte" in r] == [0, 2, 4, 6]
    first = next(r for r in rows if "eval/wiki/bits_per_byte" in r)
    assert first["eval/wiki/bits_per_byte"] == first["eval/often/bits_per_byte"]  # the same model, the same task


@pytest.mark.parametrize("entry, message", [
    ({"label": "mc", "task": "t", "limt": 3}, "eval_tasks[0].limt: unknown key (did you mean 'limit'?)"),
    ({"label": "mc"}, "eval_tasks[0].task: give a task name"),
    ({"label": "mc", "task": "t", "limit": 0}, "eval_tasks[0].limit: expects an integer >= 1, got 0"),
    ({"label": "mc", "task": "t", "type": "downstrem"}, "eval_tasks[0].type: 'downstrem' is not one of"),
    ({"label": "ppl", "type": "lm", "task": "t"}, "eval_tasks[0].task: is for type downstream entries"),
    ({"label": "ppl", "type": "lm"}, "eval_tasks[0].dataset: give the held-out text"),
    ({"label": "mc", "task": "t", "seq_len": 8}, "eval_tasks[0].seq_len: is for type lm entries"),
    ({"task": "t"}, "eval_tasks[0].label: give a name"),
    ({"label": "mc", "task": "t", "eval_interval": 0}, "eval_tasks[0].eval_interval: expects an integer >= 1, got 0"),
])
def test_a_bad_entry_is_a_config_error_naming_the_key(entry, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_eval_tasks([entry])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_bad_entry_fails_the_cli_in_one_line_before_training(tmp_path, tiny_model_dir, data_dir, capsys):
    out = tmp_path / "run"
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "mc", "task": "mc_next"}, {"label": "mc", "task": "x"}])
    assert main(["train", str(config)]) != 0
    err = capsys.readouterr().err.strip()
    assert "eval_tasks[1].label: 'mc' is used by an earlier entry" in err and len(err.splitlines()) == 1
    assert not (out / "trainer_log.jsonl").exists()


def test_eval_tasks_alone_do_not_make_eval_steps_valid(tmp_path, tiny_model_dir, data_dir, capsys):
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, tmp_path / "run", val_size=0.0,
                          eval_tasks=[{"label": "mc", "task": "mc_next"}])
    assert main(["train", str(config)]) != 0
    assert "eval_tasks are scored at the end of training only" in capsys.readouterr().err


def test_a_missing_task_file_fails_before_training(tmp_path, tiny_model_dir, data_dir, capsys):
    out = tmp_path / "run"
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "mc", "task": str(tmp_path / "nope.yaml")}])
    assert main(["train", str(config)]) != 0
    err = capsys.readouterr().err.strip()
    assert err == f"lmforge: error: eval_tasks[0].task: task file not found: {tmp_path / 'nope.yaml'}"
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "mc", "task": "mc_next", "include_path": str(tmp_path / "none")}])
    assert main(["train", str(config)]) != 0
    assert capsys.readouterr().err.strip().endswith("eval_tasks[0].include_path: " + str(tmp_path / "none")
                                                    + " is not a directory")
    # a name absent from include_path is found when the trainer is built: still one line, before any step
    (tmp_path / "empty").mkdir()
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "mc", "task": "mc_next", "include_path": str(tmp_path / "empty")}])
    assert main(["train", str(config)]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lmforge: error:") and "mc_next" in last
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "held", "type": "lm", "dataset": str(tmp_path / "gone.jsonl")}])
    assert main(["train", str(config)]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lmforge: error:") and "gone.jsonl" in last
    # a record whose target is outside its choices: found when the items are built, before the first step
    tasks = write_tasks(tmp_path / "tasks")
    (tmp_path / "tasks" / "mc.jsonl").write_text(json.dumps({"question": "What?", "choices": ["1", "2"], "answer": 7})
                                                 + "\n")
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, data_dir, out,
                          eval_tasks=[{"label": "mc", "task": "mc_next", "include_path": str(tasks)}])
    assert main(["train", str(config)]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("lmforge: error: " + str(tasks / "mc_next.yaml") + ": record 0: doc_to_target gave 7, which is not "
                    "one of its 2 choices ['1', '2'] (nor an index 0..1)")
    assert not (out / "trainer_log.jsonl").exists()


def test_evaluate_restores_train_mode_and_scores_the_lm_under_a_value_head(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.model.value_head import ValueHeadModel
    from lmforge.train.callbacks.evaluators import EvaluatorCallback

    tasks = write_tasks(tmp_path / "tasks")
    specs = parse_eval_tasks([{"label": "mc", "task": "mc_next", "include_path": str(tasks), "limit": 4},
                              {"label": "wiki", "task": str(tasks / "wiki.yaml")}])
    callback = EvaluatorCallback(specs, AutoTokenizer.from_pretrained(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    plain = callback.evaluate(model)
    assert model.training and sorted(plain) == ["eval/mc/acc", "eval/mc/acc_norm", "eval/wiki/bits_per_byte"]
    assert callback.plotted() == ["eval/mc/acc", "eval/mc/acc_norm", "eval/wiki/bits_per_byte"]
    assert callback.evaluate(ValueHeadModel(model)) == plain


def test_two_gloo_processes_log_the_figures_of_one_process(tmp_path, tiny_model_dir):
    """Under DDP each rank scores a shard of the requests and the results are gathered; rank 0 logs, and the
    figures equal one process's trained with the same global batch."""
    import os
    import subprocess
    import sys

    tasks = write_tasks(tmp_path / "tasks")
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "qa.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"instruction": f"Count to {i % 9}", "output": " ".join(map(str, range(i % 9 + 1)))}) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.jsonl"}}))
    figures = {}
    for procs, batch in ((1, 4), (2, 2)):
        out = tmp_path / f"run{procs}"
        config = tmp_path / f"train{procs}.yaml"
        config.write_text(yaml.safe_dump(dict(
            model_name_or_path=str(tiny_model_dir), stage="sft", finetuning_type="full", template="qwen",
            dataset_dir=str(data), dataset="qa", cutoff_len=64, output_dir=str(out), per_device_train_batch_size=batch,
            max_steps=3, learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
            seed=3, dataloader_num_workers=0, report_to="none",
            eval_tasks=[{"label": "mc", "task": "mc_next", "include_path": str(tasks), "limit": 6},
                        {"label": "wiki", "task": str(tasks / "wiki.yaml")},
                        {"label": "heldout", "type": "lm", "dataset": str(tasks / "wiki.jsonl")}])))
        if procs == 1:  # the reference runs in this process: a process start (~6 s of imports) saved
            from lmforge.cli import main

            assert main(["train", str(config)]) == 0
        else:
            env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
            env["NPROC_PER_NODE"] = str(procs)
            done = subprocess.run([sys.executable, "-m", "lmforge.cli", "train", str(config)], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-4000:]
            assert "evaluators: requests split over 2 ranks" in done.stderr
        rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
        figures[procs] = [r for r in rows if "eval/wiki/bits_per_byte" in r]
    assert [r["step"] for r in figures[2]] == [r["step"] for r in figures[1]] == [3]  # the last step, logged once
    assert figures[2][0]["eval/mc/acc"] == figures[1][0]["eval/mc/acc"]
    assert figures[2][0]["eval/wiki/bits_per_byte"] == pytest.approx(figures[1][0]["eval/wiki/bits_per_byte"], abs=1e-5)
    assert figures[2][0]["eval/heldout/loss"] == pytest.approx(figures[1][0]["eval/heldout/loss"], abs=1e-5)


def write_preference_data(root: Path) -> Path:
    """pairs (rm, dpo), feedback (kto) and a corpus (pt) in one dataset_dir."""
    root.mkdir(parents=True, exist_ok=True)
    pairs = [{"instruction": f"Is {i} fine?", "chosen": "Yes, it is fine.", "rejected": "No."} for i in range(16)]
    feedback = [{"messages": [{"role": "user", "content": f"Is {i} fine?"},
                              {"role": "assistant", "content": "Yes." if i % 2 else "No."}], "label": bool(i % 2)}
                for i in range(16)]
    (root / "pairs.json").write_text(json.dumps(pairs))
    (root / "feedback.json").write_text(json.dumps(feedback))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": f"The number is {i}."}) + "\n" for i in range(16)))
    info = {"pairs": {"file_name": "pairs.json", "ranking": True,
                      "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
            "feedback": {"file_name": "feedback.json", "formatting": "sharegpt",
                         "columns": {"messages": "messages", "kto_tag": "label"},
                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                  "assistant_tag": "assistant"}},
            "corpus": {"file_name": "corpus.jsonl", "columns": {"prompt": "text"}}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("stage, dataset", [("pt", "corpus"), ("rm", "pairs"), ("dpo", "pairs"), ("kto", "feedback")])
def test_every_stage_logs_its_evaluators(tmp_path, tiny_model_dir, stage, dataset):
    """The evaluators hang off the trainer every stage builds: each stage logs them at the last step, and the
    figure is the trained model's (dpo: equal to `lmforge eval` on the saved adapter)."""
    tasks = write_tasks(tmp_path / "tasks")
    out = tmp_path / "run"
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, write_preference_data(tmp_path / "data"), out,
                          stage=stage, dataset=dataset, max_steps=2, val_size=0, eval_strategy="no",
                          eval_tasks=[{"label": "wiki", "task": str(tasks / "wiki.yaml")},
                                      {"label": "heldout", "type": "lm", "dataset": str(tasks / "wiki.jsonl")}])
    assert main(["train", str(config)]) == 0
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    scored = [r for r in rows if "eval/wiki/bits_per_byte" in r]
    assert [r["step"] for r in scored] == [2]
    assert 0 < scored[0]["eval/wiki/bits_per_byte"] < 100 and scored[0]["eval/heldout/loss"] > 0
    if stage == "dpo":
        standalone = tmp_path / "standalone"
        assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={out}",
                     f"tasks={tasks / 'wiki.yaml'}", f"output_path={standalone}"]) == 0
        report = json.loads((standalone / "results.json").read_text())["results"]["wiki"]
        assert scored[0]["eval/wiki/bits_per_byte"] == pytest.approx(report["bits_per_byte,none"], rel=1e-5)
