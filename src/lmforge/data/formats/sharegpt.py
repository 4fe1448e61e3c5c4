"""The sharegpt format: a list of {from, value} messages, with optional system and tools columns.

    {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}], "tools": "[...]"}

Field and role names come from the entry's `tags` (defaults from/value/human/gpt/observation/function_call/
system, as in LLaMA-Factory). Human and observation turns sit at odd positions, gpt and function_call at
even ones; a leading system turn becomes the system prompt. Ranking records hold the prompt turns in
`messages` and one message each in the `chosen` and `rejected` columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.data.formats import FORMATS, InvalidRecord, Sample, build_sample, text_field, tools_field
from lmforge.types import Role

if TYPE_CHECKING:
    from lmforge.data.dataset_info import DatasetSpec, Tags


@FORMATS.register("sharegpt")
def convert_sharegpt(record: dict[str, Any], spec: DatasetSpec, *, allow_empty_response: bool = False) -> Sample:
    """Convert one sharegpt record; raises `InvalidRecord` for one that cannot be a sample."""
    roles = role_names(spec.tags)
    turns = [parse_message(message, spec.tags, roles) for message in message_list(record, spec.columns.messages)]
    return finish(record, spec, turns, allow_empty_response)


def role_names(tags: Tags) -> dict[str, Role]:
    """The role each tag value stands for."""
    return {
        tags.user_tag: Role.USER,
        tags.assistant_tag: Role.ASSISTANT,
        tags.observation_tag: Role.OBSERVATION,
        tags.function_tag: Role.FUNCTION,
        tags.system_tag: Role.SYSTEM,
    }


def message_list(record: dict[str, Any], column: str | None) -> list[Any]:
    """The record's list of messages."""
    messages = record.get(column) if column else None
    if messages is None:
        raise InvalidRecord("missing messages")
    if not isinstance(messages, list):
        raise InvalidRecord("messages is not a list")
    return messages


def parse_message(message: Any, tags: Tags, roles: dict[str, Role]) -> tuple[Role, str]:
    """One message as (role, content)."""
    if not isinstance(message, dict) or tags.role_tag not in message:
        raise InvalidRecord(f"message without '{tags.role_tag}'")
    name = message[tags.role_tag]
    role = roles.get(name) if isinstance(name, str) else None
    if role is None:
        raise InvalidRecord(f"unknown role '{name}'")
    content = message.get(tags.content_tag)
    if not isinstance(content, str):
        raise InvalidRecord(f"message without text in '{tags.content_tag}'")
    return role, content


def finish(
    record: dict[str, Any], spec: DatasetSpec, turns: list[tuple[Role, str]], allow_empty_response: bool
) -> Sample:
    """Build the sample from parsed turns plus the record's system, tools and (ranking) response columns."""
    columns = spec.columns
    system = text_field(record, columns.system, "system") or ""
    tools = tools_field(record, columns.tools)
    if not spec.ranking:
        return build_sample(turns, system=system, tools=tools, allow_empty_response=allow_empty_response)
    roles = role_names(spec.tags)
    chosen, rejected = (
        None if record.get(column) is None else parse_message(record[column], spec.tags, roles)
        for column in (columns.chosen, columns.rejected)
    )
    return build_sample(turns, system=system, tools=tools, ranking=True, chosen=chosen, rejected=rejected)
