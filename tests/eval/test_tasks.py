"""lm-evaluation-harness task YAMLs read from local files: prompts, few-shot draws, targets, metrics, errors."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.eval.metrics import aggregate, exact_match, item_metrics
from lmforge.eval.tasks import build_items, find_tasks, load_split, read_task_yaml, resolve_tasks
from lmforge.eval.tasks.filters import apply_filter
from lmforge.eval.tasks.spec import FilterStep


def test_names_are_found_in_include_path_and_files_are_read_as_given(task_dir):
    assert sorted(find_tasks(task_dir)) == ["mc_next", "sums", "wiki"]
    specs = resolve_tasks(f"mc_next, {task_dir / 'wiki.yaml'}", str(task_dir))
    assert [s.task for s in specs] == ["mc_next", "wiki"]
    mc = specs[0]
    assert (mc.output_type, mc.metrics, mc.target_delimiter, mc.fewshot_delimiter) == (
        "multiple_choice", ("acc", "acc_norm"), " ", "\n\n")
    with pytest.raises(ConfigError, match="no task, group or tag 'mc_nxt'.*did you mean 'mc_next'"):
        resolve_tasks("mc_nxt", str(task_dir))


def test_zero_shot_multiple_choice_items_are_lm_evals_requests(task_dir):
    spec = read_task_yaml(task_dir / "mc_next.yaml")
    docs = load_split(spec, "test")
    items = build_items(spec, num_fewshot=0, limit=3)
    assert len(items) == 3
    first = items[0]
    question = f"Pick the next number.\n\nQuestion: {docs[0]['question']}\nAnswer:"
    assert first.context == question
    assert first.choices == docs[0]["choices"]  # "{{choices}}" renders a list literal, read back as a list
    assert first.requests == [(question, " " + c) for c in docs[0]["choices"]]  # target_delimiter before each
    assert first.gold == docs[0]["answer"] and first.choices[first.gold] == str(int(docs[0]["question"].split()[-1][:-1]) + 1)


def test_few_shot_draws_follow_lm_evals_seeded_sampler(task_dir):
    spec = read_task_yaml(task_dir / "mc_next.yaml")
    train = load_split(spec, "train")
    items = build_items(spec, num_fewshot=3, limit=4, seed=1234)
    rnd = random.Random(1234)  # one generator per task, advanced once per scored document, in order
    for item in items:
        shots = rnd.sample(train, 3)
        expected = "Pick the next number.\n\n" + "".join(
            f"Question: {s['question']}\nAnswer: {s['choices'][s['answer']]}\n\n" for s in shots)
        assert item.context == expected + f"Question: {item.doc['question']}\nAnswer:"
    assert build_items(spec, num_fewshot=3, limit=4, seed=7)[0].context != items[0].context


def test_shots_from_the_scored_split_leave_the_document_out(tmp_path, task_dir):
    text = (task_dir / "mc_next.yaml").read_text().replace("fewshot_split: train", "fewshot_split: test")
    (tmp_path / "self.yaml").write_text(text)
    spec = read_task_yaml(tmp_path / "self.yaml")
    for item in build_items(spec, num_fewshot=11):  # 12 documents: every other one, the scored one excluded
        assert f"Question: {item.doc['question']}\nAnswer: " not in item.context.rsplit("\n\n", 1)[0]


def test_generation_and_perplexity_items(task_dir):
    sums = read_task_yaml(task_dir / "sums.yaml")
    assert sums.until == ("\n",) and sums.max_gen_toks == 8
    item = build_items(sums)[0]
    assert item.context == f"Q: {item.doc['a']} plus {item.doc['b']}?\nA:"
    assert item.gold == str(item.doc["a"] + item.doc["b"])  # Jinja expression in doc_to_target
    wiki = read_task_yaml(task_dir / "wiki.yaml")
    item = build_items(wiki)[0]
    assert item.requests == [("", item.doc["text"])] and item.gold == item.doc["text"]


def test_metrics_follow_lm_eval(task_dir):
    spec = read_task_yaml(task_dir / "mc_next.yaml")
    item = build_items(spec, limit=1)[0]
    item.choices, item.gold = ["a", "bbbbbbbb", "cc", "d"], 1
    item.results = [(-3.0, False), (-8.0, True), (-5.0, False), (-9.0, False)]
    # acc: the highest log-likelihood ("a"); acc_norm divides by the choice's characters: -8/8 = -1 wins
    assert item_metrics(spec, item) == {"acc": 0.0, "acc_norm": 1.0}
    assert aggregate("acc", [1.0, 0.0, 1.0, 1.0]) == pytest.approx((0.75, 0.25))
    assert aggregate("bits_per_byte", [(-2.0, 4), (-6.0, 4)])[0] == pytest.approx(1.0 / 0.6931471805599453)
    assert aggregate("word_perplexity", [(-2.0, 1), (-2.0, 1)]) == (pytest.approx(7.389056), None)
    regex = (FilterStep("regex", regex_pattern=r"#### (\d+)"), FilterStep("take_first"))
    assert apply_filter(regex, "so #### 12 and #### 13") == "12"
    assert apply_filter(regex, "no number") == "[invalid]"
    assert exact_match("The Cat.", "the cat", ignore_case=True, ignore_punctuation=True) == 1.0


def _write(tmp_path, task_dir, **changes) -> str:
    text = (task_dir / "mc_next.yaml").read_text()
    for old, new in changes.items():
        old = old.replace("__", " ")
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("old", "new", "error", "match"), [
    ("doc_to_target:", "doc_to_targte:", ConfigError, r"bad.yaml: unknown key 'doc_to_targte' \(did you mean 'doc_to_target'\?\)"),
    ("metric: acc_norm", "metric: acc_nrom", ConfigError, r"bad.yaml: metric_list: 'acc_nrom'.*did you mean 'acc_norm'"),
    ("output_type: multiple_choice", "output_type: multiple_choise", ConfigError, r"output_type .*did you mean 'multiple_choice'"),
    ("mc_train.jsonl", "mc_trian.jsonl", ConfigError, r"bad.yaml: dataset_kwargs.data_files: the train file .*mc_trian.jsonl does not exist"),
    ("test_split: test", "test_split: tset", ConfigError, r"test_split 'tset' is not among the splits.*did you mean 'test'"),
    ("task: mc_next", "task: mc_next\nprocess_docs: !function utils.process_docs", ConfigError, r"bad.yaml: .*process_docs"),
    ("task: mc_next", "task: mc_next\nfewshot_config:\n  sampler: frist_n", ConfigError,
     r"bad.yaml: fewshot_config.sampler 'frist_n' is not one of default, first_n \(did you mean 'first_n'\?\)"),
    ("task: mc_next", "task: mc_next\nfewshot_config:\n  samples: []", ConfigError,
     r"bad.yaml: fewshot_config.samples is not supported \(only fewshot_config.sampler"),
])
def test_bad_task_files_name_the_file_and_key(tmp_path, task_dir, old, new, error, match):
    with pytest.raises(error, match=match):
        read_task_yaml(_write(tmp_path, task_dir, **{old: new}))


def test_first_n_shots_are_the_first_records_in_order(tmp_path, task_dir):
    from lmforge.eval.tasks.task import load_split

    spec = read_task_yaml(_write(tmp_path, task_dir, **{"task: mc_next": "task: mc_next\nfewshot_config:\n  sampler: first_n"}))
    assert spec.fewshot_sampler == "first_n"
    shots = load_split(spec, "train")[:3]
    for item in build_items(spec, num_fewshot=3, limit=4):
        positions = [item.context.index(shot["question"]) for shot in shots]
        assert positions == sorted(positions)  # the same three, in file order, before every question


def test_process_docs_is_refused_with_the_reason(tmp_path, task_dir):
    path = tmp_path / "p.yaml"
    path.write_text((task_dir / "mc_next.yaml").read_text() + "process_docs: my_function\n")
    with pytest.raises(ConfigError, match=r"p.yaml: key 'process_docs' is not supported \(a Python function over "
                                          r"the documents; write the processed rows into the data file instead\)"):
        read_task_yaml(path)


def test_jinja_errors_quote_the_template_and_record(tmp_path, task_dir):
    spec = read_task_yaml(_write(tmp_path, task_dir, **{"{{question}}": "{{questoin}}"}))
    with pytest.raises(DataError, match=r"bad.yaml: doc_to_text: template 'Question: \{\{questoin\}\}\\nAnswer:' on "
                                        r"record 0: 'questoin' is undefined \(the record's fields: answer, choices, question\)"):
        build_items(spec)
    spec = read_task_yaml(_write(tmp_path, task_dir, **{"{{question}}": "{{question"}))
    with pytest.raises(DataError, match=r"doc_to_text: Jinja syntax error .* in template 'Question: \{\{question"):
        build_items(spec)


def test_a_target_outside_the_choices_names_the_record(tmp_path, task_dir):
    data = tmp_path / "mc.jsonl"
    rows = [{"question": "q0", "choices": ["1", "2"], "answer": 1}, {"question": "q1", "choices": ["1", "2"], "answer": 2}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = read_task_yaml(_write(tmp_path, task_dir, **{str(task_dir / "data" / "mc_test.jsonl"): str(data)}))
    with pytest.raises(DataError, match=r"record 1: doc_to_target gave 2, which is not one of its 2 choices \['1', '2'\]"):
        build_items(spec)


def test_an_empty_split_is_an_error(tmp_path, task_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    spec = read_task_yaml(_write(tmp_path, task_dir, **{str(task_dir / "data" / "mc_test.jsonl"): str(empty)}))
    with pytest.raises(DataError, match=r"bad.yaml: .*the test split \(.*empty.jsonl\)"):
        build_items(spec)


def test_asking_for_more_shots_than_the_split_holds(task_dir):
    with pytest.raises(DataError, match="25 few-shot examples asked for, but the few-shot split has only 20 records"):
        build_items(read_task_yaml(task_dir / "mc_next.yaml"), num_fewshot=25)


def test_shots_for_a_task_without_test_split_draw_one_extra(variety_dir):
    # lm-eval compares fewshot_split with test_split as written: both unset (None == None) means it draws n + 1
    # and keeps the first n, even though the shots come from training_split here
    spec = read_task_yaml(variety_dir / "letters.yaml")
    dev = load_split(spec, "dev")
    rnd = random.Random(1234)
    for item in build_items(spec):  # num_fewshot: 2 from the file
        shots = rnd.sample(dev, 3)[:2]
        assert item.context.startswith("".join(f"{s['question']}\nA. {s['A']}\n" for s in shots[:1]))
        assert item.context.count("Answer: A\n\n") == 2
        for shot in shots:
            assert f"{shot['question']}\nA. {shot['A']}\nB. {shot['B']}" in item.context


def test_parquet_files_and_a_plain_local_directory(tmp_path, task_dir):
    import pandas as pd

    rows = [json.loads(line) for line in (task_dir / "data" / "mc_test.jsonl").read_text().splitlines()]
    local = tmp_path / "local"
    local.mkdir()
    pd.DataFrame(rows).to_parquet(local / "test.parquet")
    text = (task_dir / "mc_next.yaml").read_text()
    head, _, rest = text.partition("dataset_path: json\n")
    body = rest[rest.index("test_split"):].replace("fewshot_split: train\n", "")
    (tmp_path / "dir.yaml").write_text(f"{head}dataset_path: {local}\n{body}")
    (tmp_path / "pq.yaml").write_text(f"{head}dataset_path: parquet\ndataset_kwargs:\n  data_files:\n"
                                      f"    test: {local / 'test.parquet'}\n{body}")
    reference = build_items(read_task_yaml(task_dir / "mc_next.yaml"), limit=4)
    for name in ("dir.yaml", "pq.yaml"):
        spec = read_task_yaml(tmp_path / name)
        assert spec.builder == "parquet" and spec.data_files == {"test": [str(local / "test.parquet")]}
        items = build_items(spec, limit=4)
        assert [(i.requests, i.gold) for i in items] == [(i.requests, i.gold) for i in reference]
