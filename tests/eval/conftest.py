"""Small generated lm-evaluation-harness task files: a multiple-choice task whose answer is learnable (the
next number), a generate_until task with a regex filter (sums written as '#### n'), a perplexity task."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mc_rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        x = rnd.randrange(10, 90)
        options = [str(x + 1), str(x + 3), str(x - 2), str(x + 10)]
        rnd.shuffle(options)
        rows.append({"question": f"What comes after {x}?", "choices": options, "answer": options.index(str(x + 1))})
    return rows


def write_task_dir(root: Path) -> Path:
    """tasks/ with mc_next (multiple_choice, 0 shots by default), sums (generate_until + regex), wiki (rolling)."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    mc_test = _jsonl(data / "mc_test.jsonl", mc_rows(12, seed=1))
    mc_train = _jsonl(data / "mc_train.jsonl", mc_rows(20, seed=2))
    (root / "mc_next.yaml").write_text(
        "task: mc_next\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {mc_test}\n    train: {mc_train}\n"
        "test_split: test\nfewshot_split: train\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        "doc_to_target: answer\n"
        'doc_to_choice: "{{choices}}"\n'
        "description: \"Pick the next number.\\n\\n\"\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    rnd = random.Random(3)
    sums = [{"a": (a := rnd.randrange(1, 9)), "b": (b := rnd.randrange(1, 9)), "answer": f"#### {a + b}"}
            for _ in range(6)]
    sums_file = _jsonl(data / "sums.jsonl", sums)
    (root / "sums.yaml").write_text(
        "task: sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {sums_file}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "Q: {{a}} plus {{b}}?\\nA:"\n'
        'doc_to_target: "{{answer.split(\'#### \')[-1]}}"\n'
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n"
        "metric_list:\n  - metric: exact_match\n"
        "filter_list:\n"
        "  - name: strict-match\n    filter:\n      - function: regex\n        regex_pattern: \"#### (\\\\d+)\"\n"
        "      - function: take_first\n"
    )
    texts = [{"text": " ".join(rnd.choice(WORDS) for _ in range(5 + 3 * i))} for i in range(5)]
    wiki = _jsonl(data / "wiki.jsonl", texts)
    (root / "wiki.yaml").write_text(
        "task: wiki\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {wiki}\n"
        "test_split: test\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    )
    return root


@pytest.fixture
def task_dir(tmp_path) -> Path:
    return write_task_dir(tmp_path / "tasks")


def write_variety_dir(root: Path) -> Path:
    """Three more task shapes: MMLU-style letters from CSV (validation split scored, shots from training_split),
    a loglikelihood task, and choices of very different lengths with shots from the scored split itself."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(5)
    header = "question,A,B,C,D,answer\n"

    def letters(n: int) -> str:
        lines = []
        for i in range(n):
            x = rnd.randrange(2, 50)
            opts = [x * 2, x + 2, x * 3, x - 1]
            lines.append(f"Double {x}?,{opts[0]},{opts[1]},{opts[2]},{opts[3]},{'ABCD'[0]}")
        return header + "\n".join(lines) + "\n"

    (root / "letters_dev.csv").write_text(letters(6))
    (root / "letters_val.csv").write_text(letters(8))
    (root / "letters.yaml").write_text(
        "task: letters\ndataset_path: csv\n"
        f"dataset_kwargs:\n  data_files:\n    dev: {root / 'letters_dev.csv'}\n    validation: {root / 'letters_val.csv'}\n"
        "training_split: dev\nvalidation_split: validation\nnum_fewshot: 2\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question.strip()}}\\nA. {{A}}\\nB. {{B}}\\nC. {{C}}\\nD. {{D}}\\nAnswer:"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    pairs = [{"prefix": f"Counting: {i}, {i + 1},", "suffix": f"{i + 2}"} for i in range(6)]
    _jsonl(root / "ll.jsonl", pairs)
    (root / "ll_next.yaml").write_text(
        "task: ll_next\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {root / 'll.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood\n"
        'doc_to_text: "{{prefix}}"\ndoc_to_target: " {{suffix}}"\n'
        "metric_list:\n  - metric: perplexity\n  - metric: acc\n"
    )
    rows = [{"q": f"Say {w}", "options": [w, w * 4 + " indeed", "x", w[::-1]], "gold": w}
            for w in WORDS[:10]]
    _jsonl(root / "say.jsonl", rows)
    (root / "say.yaml").write_text(
        "task: say\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {root / 'say.jsonl'}\n"
        "test_split: test\nfewshot_split: test\nnum_fewshot: 3\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: options\ndoc_to_target: gold\n'
        'target_delimiter: ": "\nfewshot_delimiter: "\\n###\\n"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (root / "mc_pair.yaml").write_text(
        "group: mc_pair\ntask: [letters, say]\naggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
        "  - metric: acc_norm\n    weight_by_size: false\n"
    )
    return root


@pytest.fixture
def variety_dir(tmp_path) -> Path:
    return write_variety_dir(tmp_path / "variety")
