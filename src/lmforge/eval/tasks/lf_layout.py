"""LLaMA-Factory's eval layout (MMLU / C-Eval / CMMLU as its `llamafactory-cli eval` read them), from local files.

    task = read_lf_task("evaluation", "mmlu_test")      # evaluation/mmlu/mapping.json + <subject>_test.csv
    rows = read_subject(task, "abstract_algebra", task.split)
    messages = lf_messages(rows[0], shots, "abstract algebra", LANG_PROMPTS["en"])

The layout: `task_dir/<task>/mapping.json` maps each subject to {"name": ..., "category": ...}; each subject has
`<subject>_dev.csv` (the few-shot pool, LLaMA-Factory's train split), `<subject>_val.csv` (validation) and
`<subject>_test.csv` (test), columns question,A,B,C,D,answer with the answer a letter. Files with that header
row are read by name; files without one (the original MMLU CSVs) by position. `task: mmlu_test` is
<task>_<split>, as LLaMA-Factory split it (its first two '_' parts).

The prompt is LLaMA-Factory 0.9.5's (eval/template.py, behaviour only): each example is the question, then
"\\n{letter}. {option}" per option, then "\\nAnswer:"; shots are (user, assistant=letter) turns before the
scored question, and the subject sentence is put in front of the first user turn.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import ConfigError, DataError, did_you_mean

CHOICES = ("A", "B", "C", "D")
CATEGORIES = ("STEM", "Social Sciences", "Humanities", "Other")
"""LLaMA-Factory's subject categories (its SUBJECTS, less "Average"), reported in this order."""
SPLIT_FILES = {"train": "dev", "validation": "val", "test": "test"}
"""LLaMA-Factory's dataset loaders: the split name in `task` -> the file suffix it reads."""
COLUMNS = ("question", *CHOICES, "answer")


@dataclass(frozen=True)
class EvalPrompt:
    system: str
    choice: str
    answer: str


LANG_PROMPTS = {
    "en": EvalPrompt("The following are multiple choice questions (with answers) about {subject}.\n\n",
                     "\n{choice}. {content}", "\nAnswer:"),
    "zh": EvalPrompt("以下是中国{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "\n{choice}. {content}", "\n答案："),
}
"""The prompt wording per `lang`, as LLaMA-Factory's eval templates word it."""


@dataclass
class LfTask:
    name: str  # the task folder, e.g. mmlu
    split: str  # train | validation | test
    root: Path
    subjects: dict[str, dict[str, str]] = field(default_factory=dict)  # subject -> {"name", "category"}

    @property
    def label(self) -> str:
        return f"{self.name}_{self.split}"


def eval_prompt(lang: str) -> EvalPrompt:
    if lang not in LANG_PROMPTS:
        raise ConfigError(f"lang: unknown language '{lang}'{did_you_mean(lang, list(LANG_PROMPTS))}; "
                          f"choose one of {', '.join(LANG_PROMPTS)}")
    return LANG_PROMPTS[lang]


def read_lf_task(task_dir: str | Path, task: str) -> LfTask:
    """The task folder and its subjects, checked: mapping.json present and well formed, every subject's file of
    the scored split present."""
    name, _, rest = task.partition("_")
    split = rest.split("_")[0]
    if not name or split not in SPLIT_FILES:
        raise ConfigError(f"task: '{task}' is not <task>_<split> with split one of {', '.join(SPLIT_FILES)} "
                          "(e.g. mmlu_test)")
    root = Path(task_dir) / name
    if not Path(task_dir).is_dir():
        raise ConfigError(f"task_dir: {task_dir} is not a directory (it holds one folder per task, e.g. mmlu/)")
    if not root.is_dir():
        have = sorted(p.name for p in Path(task_dir).iterdir() if p.is_dir())
        raise ConfigError(f"task: no folder '{name}' in task_dir {task_dir}{did_you_mean(name, have)}"
                          f"{'; folders there: ' + ', '.join(have) if have else ''}")
    mapping = root / "mapping.json"
    if not mapping.is_file():
        raise DataError(f"{mapping}: missing; it maps each subject to its name and category")
    try:
        subjects = json.loads(mapping.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{mapping}: not valid JSON: {exc}") from None
    if not isinstance(subjects, dict) or not subjects:
        raise DataError(f"{mapping}: expected a non-empty object of subject -> {{name, category}}")
    for subject, info in subjects.items():
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or info.get("category") not in CATEGORIES:
            raise DataError(f"{mapping}: subject '{subject}' needs a 'name' and a 'category' among "
                            f"{', '.join(CATEGORIES)}; got {info!r}")
        path = subject_file(root, subject, split)
        if not path.is_file():
            raise DataError(f"{path}: missing; mapping.json lists subject '{subject}' and task '{task}' scores "
                            f"the {split} split ({subject}_{SPLIT_FILES[split]}.csv)")
    return LfTask(name, split, root, subjects)


def subject_file(root: Path, subject: str, split: str) -> Path:
    return root / f"{subject}_{SPLIT_FILES[split]}.csv"


def read_subject(task: LfTask, subject: str, split: str) -> list[dict]:
    """The rows of one subject's split as {question, A, B, C, D, answer}; the answer letter is checked."""
    path = subject_file(task.root, subject, split)
    if not path.is_file():
        raise DataError(f"{path}: missing (the {split} split of subject '{subject}')")
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    header = [c.strip() for c in lines[0]] if lines else []
    lowered = [c.lower() for c in header]
    if all(c.lower() in lowered for c in COLUMNS):  # a header row: columns by name (C-Eval adds id, explanation)
        index = {c: lowered.index(c.lower()) for c in COLUMNS}
        body, first_line = lines[1:], 2
    else:  # the original MMLU CSVs have no header: question, A, B, C, D, answer by position
        index = {c: i for i, c in enumerate(COLUMNS)}
        body, first_line = lines, 1
    rows = []
    for number, line in enumerate(body, start=first_line):
        if not any(cell.strip() for cell in line):
            continue
        if len(line) <= max(index.values()):
            raise DataError(f"{path}: line {number} has {len(line)} columns; expected {', '.join(COLUMNS)}")
        row = {c: line[i] for c, i in index.items()}
        answer = row["answer"].strip()
        if answer not in CHOICES:
            raise DataError(f"{path}: line {number}: answer '{row['answer']}' is not one of {', '.join(CHOICES)}")
        rows.append({**row, "answer": answer})
    if not rows:
        raise DataError(f"{path}: no rows (the {split} split of subject '{subject}')")
    return rows


def format_example(row: dict, prompt: EvalPrompt) -> tuple[str, str]:
    """(user text, answer letter) of one row."""
    options = "".join(prompt.choice.format(choice=c, content=row[c]) for c in CHOICES)
    return row["question"] + options + prompt.answer, row["answer"]


def lf_messages(row: dict, shots: list[dict], subject_name: str, prompt: EvalPrompt) -> list[tuple[str, str]]:
    """(role, content) turns: each shot as user + assistant, then the scored question as a user turn."""
    turns: list[tuple[str, str]] = []
    for shot in shots:
        text, letter = format_example(shot, prompt)
        turns += [("user", text), ("assistant", letter)]
    turns.append(("user", format_example(row, prompt)[0]))
    role, content = turns[0]
    turns[0] = (role, prompt.system.format(subject=subject_name) + content)
    return turns
