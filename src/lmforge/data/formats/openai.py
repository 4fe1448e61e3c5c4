"""The openai format: OpenAI chat messages, {role, content}, roles system/user/assistant/tool.

    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]}

It is sharegpt with OpenAI's names as defaults (messages column `messages`; tags role/content/user/
assistant/tool/system; the entry's `tags` still override them). On top of sharegpt, as LLaMA-Factory's
openai converter does:

  - an assistant message with `tool_calls` becomes a function turn whose content is the JSON list of the
    calls' `function`s (we also decode each call's `arguments` string, so templates render an object);
  - consecutive tool messages merge into one observation turn, joined the way LLaMA-Factory joins them;
  - content given as a list of parts keeps its text parts, concatenated.

Not copied: LLaMA-Factory appends "detailed thinking off" to the system prompt of openai records, a quirk
for one model family; here the system prompt is the record's own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lmforge.data.formats import FORMATS, InvalidRecord, Sample
from lmforge.data.formats.sharegpt import finish, message_list, parse_message, role_names
from lmforge.types import Role

if TYPE_CHECKING:
    from lmforge.data.dataset_info import DatasetSpec, Tags

# LLaMA-Factory's separator between tool results merged into one observation (data/converter.py).
TOOL_RESULTS_SEPARATOR = "\n</tool_response>\n<tool_response>\n"


@FORMATS.register("openai")
def convert_openai(record: dict[str, Any], spec: DatasetSpec, *, allow_empty_response: bool = False) -> Sample:
    """Convert one openai record; raises `InvalidRecord` for one that cannot be a sample."""
    tags = spec.tags
    roles = role_names(tags)
    turns: list[tuple[Role, str]] = []
    tool_results: list[str] = []
    for message in message_list(record, spec.columns.messages):
        role, content = parse_message(_plain(message, tags), tags, roles)
        if role == Role.OBSERVATION:
            tool_results.append(content)
            continue
        if tool_results:
            turns.append((Role.OBSERVATION, TOOL_RESULTS_SEPARATOR.join(tool_results)))
            tool_results = []
        turns.append((role, content))
    if tool_results:
        turns.append((Role.OBSERVATION, TOOL_RESULTS_SEPARATOR.join(tool_results)))
    return finish(record, spec, turns, allow_empty_response)


def _plain(message: Any, tags: Tags) -> Any:
    """The message with tool calls turned into a function turn and content parts into text."""
    if not isinstance(message, dict):
        return message
    calls = message.get("tool_calls")
    if calls and message.get(tags.role_tag) in (tags.assistant_tag, tags.function_tag):
        calls_json = json.dumps([_call(c) for c in calls], ensure_ascii=False)
        return {tags.role_tag: tags.function_tag, tags.content_tag: calls_json}
    content_tag = tags.content_tag
    content = message.get(content_tag)
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise InvalidRecord(f"non-text content part '{kind}'")
            texts.append(part["text"])
        return {**message, content_tag: "".join(texts)}
    return message


def _call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or "name" not in function:
        raise InvalidRecord("tool call without function name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise InvalidRecord("tool call arguments are not JSON") from None
    return {"name": function["name"], "arguments": arguments}
