"""PairSample -> (prompt + chosen, prompt + rejected) token ids and labels, for rm and dpo.

Both responses follow the same prompt, rendered by the sft template, and share one truncation: the budget
rule of `truncation.share_budget` applied to the prompt and the longer response (LLaMA-Factory's rule for
pairwise data), so the two rows keep the same prompt tokens. Labels are IGNORE_INDEX on the prompt and copy
the response (with its end-of-turn tokens): the loss and the log-probs of dpo count response tokens only.
"""

from __future__ import annotations

from lmforge.data.processors.truncation import share_budget
from lmforge.types import IGNORE_INDEX, Conversation, Message, PairSample


def prompt_and_response(prompt: Conversation, response: Message, template, tokenizer) -> tuple[list[int], list[int]]:
    """Ids of the whole prompt (every earlier turn included) and of the final response, as the template renders them."""
    turns = template.encode_turns(tokenizer, Conversation([*prompt.messages, response], prompt.system, prompt.tools))
    prompt_ids = [tok for prompt_part, response_part in turns[:-1] for tok in prompt_part + response_part]
    prompt_ids += turns[-1][0]
    response_ids = list(turns[-1][1])
    if template.efficient_eos:
        response_ids.append(tokenizer.eos_token_id)
    return prompt_ids, response_ids


def encode_pairwise(pair: PairSample, template, tokenizer, cutoff_len: int) -> dict[str, list[int]]:
    """chosen_input_ids / chosen_labels and rejected_input_ids / rejected_labels of one preference pair."""
    prompt_ids, chosen_ids = prompt_and_response(pair.prompt, pair.chosen, template, tokenizer)
    _, rejected_ids = prompt_and_response(pair.prompt, pair.rejected, template, tokenizer)
    kept_prompt, kept_response = share_budget(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), cutoff_len)
    prompt_ids = prompt_ids[:kept_prompt]
    out: dict[str, list[int]] = {}
    for name, response_ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
        response_ids = response_ids[:kept_response]
        out[f"{name}_input_ids"] = prompt_ids + response_ids
        out[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return out
