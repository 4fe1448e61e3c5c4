"""Reward functions for stage grpo: built-ins by name, user functions from a file the config names, weighted.

    rewards = load_reward_funcs(["accuracy", "format", "rewards.py:correct"], base_dir=Path("."))
    scores = score_completions(rewards, prompts, completions, columns={"answer": [...]}, weights=[1, 0.5, 1])

A reward function takes `(prompts: list[str], completions: list[str], **columns)` and returns one float per
completion; `columns` are the dataset's columns for each completion's prompt (the response column arrives as
`answer`, the reference). User functions are loaded from `path.py:function` only when the config names them (no
other code in the project directory ever runs). A function that raises, or returns the wrong number of values or a
non-number, stops the run with its name and the prompt index.

Built-ins:
- `accuracy`: 1.0 when the completion's answer equals the reference: the text after the last "####", else inside
  the last \\boxed{...}, else the last number, else the whole stripped text; math answers compare by value
  (`math_value`: 1,000 = 1000, \\frac{1}{2} = 1/2 = 0.5, 50% = 0.5), anything else as exact text.
- `format`: 1.0 when the completion matches `<think>...</think>` followed by an answer.
- `think_format`: 1.0 when it has exactly one closed <think> block at its start.
- `length`: DAPO's overlong penalty: 0 up to max_length - cache, falling linearly to -1 at max_length (in words).
- `repetition`: minus the share of repeated 3-grams of words.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import operator
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from lmforge.errors import ConfigError, DataError
from lmforge.registry import Registry

RewardFunc = Callable[..., list[float]]
BUILTIN_REWARDS: Registry[RewardFunc] = Registry("reward_funcs")

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")


def extract_answer(text: str) -> str:
    """The final answer of a completion (see `accuracy`)."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    return text.strip()


_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_ARITHMETIC = re.compile(r"^[\d.+\-*/() ]+$")


def math_value(text: str) -> float | None:
    """The number a short math answer denotes: "1,000", "$12$", "\\frac{3}{4}", "3/4", "50%" (0.5), "2^3" or
    "(1+2)*3"; None when it is not a plain arithmetic expression. Only digits and + - * / ( ) reach the evaluator."""
    t = text.strip().strip("$").replace("\\left", "").replace("\\right", "").replace(",", "")
    t = _FRAC.sub(r"(\1)/(\2)", t).replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    percent = t.endswith("%") or t.endswith("\\%")
    t = t.rstrip("%").rstrip("\\").strip()
    if not t or not _ARITHMETIC.match(t.replace("**", "*")) or len(t) > 64:
        return None
    try:
        value = _evaluate(ast.parse(t, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, OverflowError, TypeError, ValueError):
        return None
    return value / 100 if percent else value


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow}


def _evaluate(node: ast.AST) -> float:
    """+ - * / ** over float constants only (floats overflow instead of growing without bound, as 9**9**9 would)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    raise ValueError("not arithmetic")


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, nested braces included (\\boxed{\\frac{1}{2}})."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            return text[begin:i].strip()
    return None


def _same(a: str, b: str) -> bool:
    x, y = math_value(a), math_value(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
    return a.strip() == b.strip()


@BUILTIN_REWARDS.register("accuracy")
def accuracy_reward(prompts: list[str], completions: list[str], answer: Sequence[str] | None = None,
                    **_) -> list[float]:
    if answer is None:
        raise DataError("reward 'accuracy' needs the reference answer: the dataset's response column")
    return [1.0 if _same(extract_answer(c), extract_answer(str(a))) else 0.0 for c, a in zip(completions, answer)]


_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*\S.*$", re.DOTALL)


@BUILTIN_REWARDS.register("format")
def format_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
    return [1.0 if _FORMAT.match(c) else 0.0 for c in completions]


@BUILTIN_REWARDS.register("think_format")
def think_format_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
    return [1.0 if c.lstrip().startswith("<think>") and c.count("<think>") == 1 and c.count("</think>") == 1
            else 0.0 for c in completions]


def overlong_penalty(length: int, max_length: int, cache: int) -> float:
    """DAPO's soft overlong punishment: 0 up to max_length - cache, -1 at max_length and beyond."""
    if length <= max_length - cache:
        return 0.0
    return max(-1.0, (max_length - cache - length) / cache)


@BUILTIN_REWARDS.register("length")
def length_reward(prompts: list[str], completions: list[str], max_length: int = 256, cache: int = 64,
                  **_) -> list[float]:
    return [overlong_penalty(len(c.split()), max_length, cache) for c in completions]


@BUILTIN_REWARDS.register("repetition")
def repetition_reward(prompts: list[str], completions: list[str], n: int = 3, **_) -> list[float]:
    out = []
    for c in completions:
        words = c.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        out.append(-(1 - len(set(grams)) / len(grams)) if grams else 0.0)
    return out


def load_reward_funcs(names: Sequence[str], base_dir: Path) -> list[tuple[str, RewardFunc]]:
    """(name, function) for each entry: a built-in name, or `file.py:function` (relative to `base_dir`)."""
    funcs = []
    for name in names:
        if ":" not in name:
            funcs.append((name, BUILTIN_REWARDS.get(name)))
            continue
        file, _, attr = name.rpartition(":")
        path = (base_dir / file).resolve() if not Path(file).is_absolute() else Path(file)
        if not path.is_file():
            raise ConfigError(f"reward_funcs: {name!r}: the file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"lmforge_user_rewards_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)  # runs the user's file: only because the config names it
        except Exception as exc:  # noqa: BLE001 - the user's module failing to import is theirs to fix
            raise ConfigError(f"reward_funcs: {name!r}: importing {path} failed: {type(exc).__name__}: {exc}") from None
        func = getattr(module, attr, None)
        if not callable(func):
            raise ConfigError(f"reward_funcs: {name!r}: {path} has no function {attr!r}")
        funcs.append((name, func))
    return funcs


def score_completions(funcs: Sequence[tuple[str, RewardFunc]], prompts: list[str], completions: list[str],
                      columns: dict[str, list] | None = None, weights: Sequence[float] | None = None
                      ) -> tuple[list[float], dict[str, list[float]]]:
    """(weighted total per completion, {function name: its rewards}); a bad function stops with its name and the
    index of the prompt it failed on."""
    columns = columns or {}
    weights = list(weights) if weights is not None else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ConfigError(f"reward_weights: {len(weights)} weights for {len(funcs)} reward_funcs")
    per_func: dict[str, list[float]] = {}
    for name, func in funcs:
        try:
            values = func(prompts, completions, **columns)
        except Exception as exc:  # noqa: BLE001 - find which prompt breaks it, then report that one
            index = _failing_index(func, prompts, completions, columns)
            raise DataError(f"reward function {name!r} raised {type(exc).__name__}: {exc}"
                            + (f" (prompt {index}: {prompts[index][:80]!r})" if index is not None else "")) from None
        values = list(values) if values is not None else []
        if len(values) != len(completions):
            raise DataError(f"reward function {name!r} returned {len(values)} values for {len(completions)} "
                            "completions; it must return one float per completion")
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(f"reward function {name!r} returned {value!r} for prompt {i} "
                                f"({prompts[i][:80]!r}); rewards must be finite numbers")
        per_func[name] = [float(v) for v in values]
    totals = [sum(w * per_func[name][i] for (name, _), w in zip(funcs, weights)) for i in range(len(completions))]
    return totals, per_func


def _failing_index(func: RewardFunc, prompts, completions, columns) -> int | None:
    for i in range(len(completions)):
        try:
            func(prompts[i:i + 1], completions[i:i + 1], **{k: v[i:i + 1] for k, v in columns.items()})
        except Exception:  # noqa: BLE001
            return i
    return None
