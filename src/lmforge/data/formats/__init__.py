"""Raw records -> `Conversation` (or `PairSample` for ranking data), one converter per `formatting`.

    sample = convert_record({"instruction": "hi", "output": "hello"}, spec, placeholders={"name": "Forge"})
    sample.messages  # [Message(USER, "hi"), Message(ASSISTANT, "hello")]

A converter is `fn(record, spec, *, allow_empty_response) -> Conversation | PairSample`, registered in
`FORMATS` under the name used by dataset_info.json's `formatting`. A record that cannot become a valid
sample raises `InvalidRecord(reason)`; the loader counts those per reason and moves on. All converters end
in `build_sample`, so every format obeys one set of rules:

  - turns alternate prompt (user/observation) and response (assistant/function), starting with a prompt;
  - a leading system turn becomes `system` (it overrides the system column, as in LLaMA-Factory);
  - single-response data ends with a non-empty response, unless `allow_empty_response` (pt, ppo), where a
    prompt-only conversation is fine;
  - ranking data is a prompt ending in a prompt turn, plus a chosen and a rejected response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lmforge.registry import Registry
from lmforge.types import PROMPT_ROLES, RESPONSE_ROLES, Conversation, Message, PairSample, Role

if TYPE_CHECKING:
    from lmforge.data.dataset_info import DatasetSpec

Sample = Conversation | PairSample
Converter = Callable[..., Sample]

FORMATS: Registry[Converter] = Registry("formatting")


class InvalidRecord(Exception):
    """A record that cannot become a sample; `reason` is short and shared by similar records, for counting."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def convert_record(
    record: dict[str, Any],
    spec: DatasetSpec,
    *,
    placeholders: dict[str, str] | None = None,
    allow_empty_response: bool = False,
) -> Sample:
    """Convert one raw record with the converter of `spec.formatting`, then fill `{{key}}` placeholders.

    Raises:
        InvalidRecord: the record cannot become a valid sample.
    """
    sample = FORMATS.get(spec.formatting)(record, spec, allow_empty_response=allow_empty_response)
    return fill_placeholders(sample, placeholders) if placeholders else sample


_PLACEHOLDER = re.compile(r"\{\{\s*([\w.-]+)\s*\}\}")


def fill_text(text: str, placeholders: dict[str, str]) -> str:
    """Replace each `{{key}}` whose key is in `placeholders`; other `{{...}}` stay as written."""
    return _PLACEHOLDER.sub(lambda m: str(placeholders.get(m.group(1), m.group(0))), text)


def fill_placeholders(sample: Sample, placeholders: dict[str, str]) -> Sample:
    """A copy of `sample` with placeholders filled in every message, the system prompt and both responses.

    Tool definitions are left alone: they are JSON schemas, not prose.
    """

    def fill_conv(conv: Conversation) -> Conversation:
        messages = [Message(m.role, fill_text(m.content, placeholders)) for m in conv.messages]
        return Conversation(messages, fill_text(conv.system, placeholders), conv.tools)

    if isinstance(sample, PairSample):
        return PairSample(
            fill_conv(sample.prompt),
            Message(sample.chosen.role, fill_text(sample.chosen.content, placeholders)),
            Message(sample.rejected.role, fill_text(sample.rejected.content, placeholders)),
        )
    return fill_conv(sample)


def build_sample(
    turns: list[tuple[Role, str]],
    *,
    system: str = "",
    tools: str = "",
    ranking: bool = False,
    chosen: tuple[Role, str] | None = None,
    rejected: tuple[Role, str] | None = None,
    allow_empty_response: bool = False,
) -> Sample:
    """Check `turns` against the rules in the module docstring and build the sample.

    Args:
        turns: (role, content) in order; a leading SYSTEM turn becomes the system prompt.
        system: System prompt from the record's system column.
        tools: Tool definitions as JSON text.
        ranking: Build a `PairSample` from `chosen` and `rejected`.
        chosen: The better response (ranking only).
        rejected: The worse response (ranking only).
        allow_empty_response: Accept a missing or empty final response (pretraining, generation).

    Raises:
        InvalidRecord: the turns break a rule.
    """
    if turns and turns[0][0] == Role.SYSTEM:
        system, turns = turns[0][1], turns[1:]
    if not turns:
        raise InvalidRecord("no turns")
    for i, (role, _) in enumerate(turns):
        if role == Role.SYSTEM:
            raise InvalidRecord("system turn after the first")
        if role not in (PROMPT_ROLES if i % 2 == 0 else RESPONSE_ROLES):
            raise InvalidRecord("turns not alternating")
    messages = [Message(role, content) for role, content in turns]
    if ranking:
        if len(messages) % 2 == 0:  # the prompt must end with a prompt turn for the responses to answer
            raise InvalidRecord("even number of turns")
        return PairSample(
            Conversation(messages, system, tools), _response(chosen, "chosen"), _response(rejected, "rejected")
        )
    if len(messages) % 2 == 1:
        if not allow_empty_response:
            raise InvalidRecord("odd number of turns")
    elif not allow_empty_response and not messages[-1].content.strip():
        raise InvalidRecord("empty response")
    return Conversation(messages, system, tools)


def _response(turn: tuple[Role, str] | None, what: str) -> Message:
    if turn is None:
        raise InvalidRecord(f"missing {what}")
    role, content = turn
    if role not in RESPONSE_ROLES:
        raise InvalidRecord(f"{what} is not an assistant turn")
    if not content.strip():
        raise InvalidRecord(f"empty {what}")
    return Message(role, content)


def text_field(record: dict[str, Any], column: str | None, what: str) -> str | None:
    """The text in `record[column]`; None when no column is set or the value is missing/null."""
    if column is None:
        return None
    value = record.get(column)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRecord(f"{what} is not text")


def tools_field(record: dict[str, Any], column: str | None) -> str:
    """Tool definitions as JSON text; a JSON list/object in the record is serialised (as LLaMA-Factory does)."""
    value = record.get(column) if column else None
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    raise InvalidRecord("tools is not JSON")


def pair_to_dict(sample: PairSample) -> dict[str, Any]:
    """A ranking sample as a dataset row: prompt_messages, system, tools, chosen, rejected.

    TODO(types.py): belongs on PairSample as `to_dict` / `from_dict`, next to Conversation's.
    """
    prompt = sample.prompt.to_dict()
    return {
        "prompt_messages": prompt["messages"],
        "system": prompt["system"],
        "tools": prompt["tools"],
        "chosen": {"role": str(sample.chosen.role), "content": sample.chosen.content},
        "rejected": {"role": str(sample.rejected.role), "content": sample.rejected.content},
    }


def pair_from_dict(row: dict[str, Any]) -> PairSample:
    """The inverse of `pair_to_dict`."""
    prompt = Conversation.from_dict(
        {
            "messages": row["prompt_messages"],
            "system": row["system"],
            "tools": row["tools"],
        }
    )
    return PairSample(
        prompt,
        Message(Role(row["chosen"]["role"]), row["chosen"]["content"]),
        Message(Role(row["rejected"]["role"]), row["rejected"]["content"]),
    )


# Imported last: each module registers its converter in FORMATS, defined above.
from lmforge.data.formats import alpaca, openai, sharegpt  # noqa: F401
