"""How a prompt and its response share a token budget.

Same rule as LLaMA-Factory's `infer_seqlen`, so a config moved over truncates identically: a short
response keeps all of itself and the prompt is cut; a short prompt keeps all of itself and the response is
cut; when both are long they are cut in proportion to their lengths.
"""

from __future__ import annotations


def share_budget(prompt_len: int, response_len: int, budget: int) -> tuple[int, int]:
    """Return (kept prompt tokens, kept response tokens) whose sum is at most `budget`.

    Example:
        >>> share_budget(10, 10, 100)
        (10, 10)
        >>> share_budget(900, 100, 512)   # response fits in half the budget: cut the prompt
        (412, 100)
        >>> share_budget(100, 900, 512)   # prompt fits in half: cut the response
        (100, 412)
        >>> share_budget(600, 400, 512)   # both long: proportional
        (308, 204)
    """
    if response_len * 2 < budget:
        max_response = budget
    elif prompt_len * 2 < budget:
        max_response = budget - prompt_len
    else:
        max_response = int(budget * response_len / (prompt_len + response_len))
    kept_response = min(max_response, response_len)
    kept_prompt = min(max(budget - kept_response, 0), prompt_len)
    return kept_prompt, kept_response
