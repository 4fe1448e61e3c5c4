"""GRPO reward functions: built-ins on hand-written completions, a user function loaded only from the file the
config names, weights, and one clear error naming the function and the prompt."""

from __future__ import annotations

import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.train.rl.rewards import (accuracy_reward, extract_answer, load_reward_funcs, math_value, overlong_penalty,
                                      score_completions)


def test_answers_are_extracted_as_gsm8k_and_math_write_them():
    assert extract_answer("so 3 + 4 = 7\n#### 7") == "7"
    assert extract_answer("the answer is \\boxed{42}.") == "42"
    assert extract_answer("I count 1, 2 and finally 12") == "12"
    assert extract_answer("Shifted: l u q b") == "Shifted: l u q b"


def test_math_answers_compare_by_value():
    assert extract_answer("so \\boxed{\\frac{1}{2}} it is") == "\\frac{1}{2}"  # nested braces
    values = {"1,000": 1000.0, "$12$": 12.0, "\\frac{3}{4}": 0.75, "\\dfrac{3}{4}": 0.75, "3/4": 0.75, "50%": 0.5,
              "2^3": 8.0, "-(2+3)": -5.0, "1/0": None, "abc": None, "9^9^9": None, "__import__('os')": None}
    assert {text: math_value(text) for text in values} == values
    completions = ["\\boxed{\\frac{1}{2}}", "#### 0.5", "#### 50%", "#### 0.51", "Shifted: a b", "Shifted: a c"]
    answers = ["#### 1/2", "#### 1/2", "#### 1/2", "#### 1/2", "Shifted: a b", "Shifted: a b"]
    assert accuracy_reward(["q"] * 6, completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_builtins_score_by_hand():
    funcs = load_reward_funcs(["accuracy", "format", "think_format", "repetition"], base_dir=None)
    completions = ["<think>2+2</think> #### 4", "#### 5", "<think>x</think><think>y</think> 4", "a b c a b c a b c"]
    totals, per = score_completions(funcs, ["q"] * 4, completions, columns={"answer": ["#### 4", "4", "4", "4"]})
    assert per["accuracy"] == [1.0, 0.0, 1.0, 0.0]
    assert per["format"] == [1.0, 0.0, 1.0, 0.0]
    assert per["think_format"] == [1.0, 0.0, 0.0, 0.0]
    assert per["repetition"][:3] == [0.0, 0.0, 0.0] and per["repetition"][3] == pytest.approx(-4 / 7)
    assert totals[0] == 3.0


def test_overlong_penalty_is_dapos():
    assert [overlong_penalty(n, 100, 20) for n in (50, 80, 90, 100, 130)] == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_a_user_function_is_loaded_from_the_named_file_and_weighted(tmp_path):
    (tmp_path / "rewards.py").write_text(
        "def correct(prompts, completions, answer, **columns):\n"
        "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    funcs = load_reward_funcs(["rewards.py:correct", "format"], base_dir=tmp_path)
    totals, per = score_completions(funcs, ["p1", "p2"], ["yes", "<think>.</think> no"],
                                    columns={"answer": ["yes", "yes"]}, weights=[2.0, 0.5])
    assert per["rewards.py:correct"] == [1.0, 0.0] and totals == [2.0, 0.5]


def test_bad_reward_functions_name_themselves_and_the_prompt(tmp_path):
    (tmp_path / "bad.py").write_text(
        "def boom(prompts, completions, **c):\n"
        "    return [1 / len(x) for x in completions]\n"
        "def short(prompts, completions, **c):\n"
        "    return [1.0]\n"
        "def nan(prompts, completions, **c):\n"
        "    return [float('nan')] * len(completions)\n")
    prompts, completions = ["first", "second", "third"], ["a", "", "c"]
    with pytest.raises(DataError, match=r"reward function 'bad.py:boom' raised ZeroDivisionError.*prompt 1: 'second'"):
        score_completions(load_reward_funcs(["bad.py:boom"], tmp_path), prompts, completions)
    with pytest.raises(DataError, match=r"'bad.py:short' returned 1 values for 3 completions"):
        score_completions(load_reward_funcs(["bad.py:short"], tmp_path), prompts, completions)
    with pytest.raises(DataError, match=r"'bad.py:nan' returned nan for prompt 0"):
        score_completions(load_reward_funcs(["bad.py:nan"], tmp_path), prompts, completions)
    with pytest.raises(ConfigError, match=r"has no function 'missing'"):
        load_reward_funcs(["bad.py:missing"], tmp_path)
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_reward_funcs(["nope.py:f"], tmp_path)
    with pytest.raises(ConfigError, match=r"reward_funcs 'acuracy' .*did you mean 'accuracy'"):
        load_reward_funcs(["acuracy"], tmp_path)
