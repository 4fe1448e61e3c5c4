"""The alpaca format: instruction (+ input) -> output, with optional system, history and tools columns.

    {"instruction": "Translate", "input": "bonjour", "output": "hello", "history": [["hi", "hey"]]}
    -> user "hi", assistant "hey", user "Translate\\nbonjour", assistant "hello"

As in LLaMA-Factory (data/converter.py): the prompt is `instruction` and `input` joined by a newline, each
left out when empty; `history` pairs come first as earlier turns; ranking records take `chosen` and
`rejected` strings as the two responses. Pretraining datasets point `prompt` at their text column (e.g.
`{"prompt": "text"}`) and have no response; the pt stage reads the first message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.data.formats import FORMATS, InvalidRecord, Sample, build_sample, text_field, tools_field
from lmforge.types import Role

if TYPE_CHECKING:
    from lmforge.data.dataset_info import DatasetSpec


@FORMATS.register("alpaca")
def convert_alpaca(record: dict[str, Any], spec: DatasetSpec, *, allow_empty_response: bool = False) -> Sample:
    """Convert one alpaca record; raises `InvalidRecord` for one that cannot be a sample."""
    columns = spec.columns
    turns = _history(record, columns.history)
    parts = [text_field(record, columns.prompt, "prompt"), text_field(record, columns.query, "query")]
    prompt = "\n".join(part for part in parts if part)
    if not prompt.strip():
        raise InvalidRecord("missing prompt")
    turns.append((Role.USER, prompt))
    system = text_field(record, columns.system, "system") or ""
    tools = tools_field(record, columns.tools)

    if spec.ranking:
        chosen = text_field(record, columns.chosen, "chosen")
        rejected = text_field(record, columns.rejected, "rejected")
        return build_sample(
            turns,
            system=system,
            tools=tools,
            ranking=True,
            chosen=None if chosen is None else (Role.ASSISTANT, chosen),
            rejected=None if rejected is None else (Role.ASSISTANT, rejected),
        )

    response = text_field(record, columns.response, "response")
    if response is None and not allow_empty_response:
        # The field is named: a bare file read with the default columns often has its answers under another one.
        raise InvalidRecord(f"missing response field '{columns.response}'" if columns.response else "missing response")
    if response or not allow_empty_response:
        # An empty response reaches build_sample, which drops it with reason "empty response".
        turns.append((Role.ASSISTANT, response or ""))
    return build_sample(turns, system=system, tools=tools, allow_empty_response=allow_empty_response)


def _history(record: dict[str, Any], column: str | None) -> list[tuple[Role, str]]:
    """Earlier [prompt, response] pairs as turns; a missing or empty history is no history."""
    history = record.get(column) if column else None
    if not history:
        return []
    turns: list[tuple[Role, str]] = []
    if isinstance(history, list):
        for pair in history:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                break
            turns += [(Role.USER, pair[0]), (Role.ASSISTANT, pair[1])]
        else:
            return turns
    raise InvalidRecord("history is not a list of [prompt, response] pairs")
