"""Reward functions for examples/grpo_lora.yaml, named there as `rewards.py:<function>` (a path relative to the YAML).

lmforge loads this file only because the config names it. Each function receives the batch's prompts (the last user
turn), the sampled completions, and the dataset's columns by keyword: `answer` is each prompt's reference response
(the dataset's response column). It returns one float per completion. A function that raises or returns the wrong
number of values stops the run with its name and the prompt it failed on.
"""

import re

ANSWER_LINE = re.compile(r"^#### -?\d+\s*$", re.MULTILINE)


def answer_line(prompts, completions, answer, **columns):
    """0.5 when the completion ends its reasoning with a '#### <number>' line, as the dataset's answers do."""
    return [0.5 if ANSWER_LINE.search(completion) else 0.0 for completion in completions]


def brevity(prompts, completions, answer, **columns):
    """A small penalty per word beyond twice the reference's length: keeps completions from rambling."""
    out = []
    for completion, reference in zip(completions, answer):
        extra = len(completion.split()) - 2 * max(len(reference.split()), 1)
        out.append(-0.01 * max(extra, 0))
    return out
