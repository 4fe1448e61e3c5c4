"""Tool descriptions and tool calls as text, in the formats LLaMA-Factory trains with.

A sample's `tools` (a JSON list of function schemas, OpenAI style or bare) becomes text appended to the
system prompt; a FUNCTION message (JSON `{"name": ..., "arguments": {...}}`, or a list of them for parallel
calls) becomes the text the assistant is trained to emit. Two formats, chosen per template by name:

  - `default`: LLaMA-Factory's ReAct-style format (`Action: name` / `Action Input: {...}`), used by every
    template that names no other;
  - `qwen`: Qwen2.5's `<tools>` JSON block and `<tool_call>` JSON calls, as Qwen's own chat template writes.

Example:
    format_tools('[{"name": "add", "parameters": {"type": "object", "properties": {}}}]', "qwen")
    format_function_call('{"name": "add", "arguments": {"a": 1}}', "default")
    # -> 'Action: add\\nAction Input: {"a": 1}'
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.errors import ConfigError, DataError

# The prompt texts below are the exact strings LLaMA-Factory (0.9.x, data/tool_utils.py) trains with, so a model
# tuned there and here sees the same tool prompt; they are data, not code.
_DEFAULT_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n'
    "```\n"
)
_QWEN_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)

TOOL_FORMATS = ("default", "qwen")


def format_tools(tools_json: str, tool_format: str) -> str:
    """The text that describes `tools_json` (a JSON list of function schemas) to the model; '' for none."""
    tools = _load(tools_json, "tools")
    if isinstance(tools, dict):
        tools = [tools]
    if not tools:
        return ""
    if tool_format == "qwen":
        # Qwen's template wraps bare schemas as {"type": "function", "function": schema}, one JSON per line.
        wrapped = [t if t.get("type") == "function" else {"type": "function", "function": t} for t in tools]
        return _QWEN_PROMPT.format(tool_text="".join("\n" + json.dumps(t, ensure_ascii=False) for t in wrapped))
    _check_format(tool_format)
    functions = [t["function"] if t.get("type") == "function" else t for t in tools]
    tool_text = "".join(_describe_default(f) for f in functions)
    return _DEFAULT_PROMPT.format(tool_text=tool_text, tool_names=", ".join(f["name"] for f in functions))


def format_function_call(content: str, tool_format: str) -> str:
    """The assistant text for a FUNCTION message whose content is a JSON call (or list of calls)."""
    calls = _load(content, "function call")
    if isinstance(calls, dict):
        calls = [calls]
    try:
        pairs = [(call["name"], call["arguments"]) for call in calls]
    except (KeyError, TypeError):
        raise DataError(
            f"a function message must be JSON {{'name': ..., 'arguments': {{...}}}} or a list of them; got {content!r}"
        ) from None
    if tool_format == "qwen":
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"
            for name, args in pairs
        )
    _check_format(tool_format)
    return "\n".join(f"Action: {name}\nAction Input: {json.dumps(args, ensure_ascii=False)}" for name, args in pairs)


def _describe_default(function: dict[str, Any]) -> str:
    """One tool in LLaMA-Factory's default format: name, description, then one line per argument."""
    params = function.get("parameters") or {}
    required = set(params.get("required", []))
    lines = []
    for name, spec in (params.get("properties") or {}).items():
        flag = ", required" if name in required else ""
        enum = f", should be one of [{', '.join(map(str, spec['enum']))}]" if spec.get("enum") else ""
        items = f", where each item should be {spec['items'].get('type', '')}" if spec.get("items") else ""
        lines.append(f"  - {name} ({spec.get('type', '')}{flag}): {spec.get('description', '')}{enum}{items}\n")
    return (
        f"> Tool Name: {function['name']}\nTool Description: {function.get('description', '')}\n"
        f"Tool Args:\n{''.join(lines)}\n"
    )


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} is not valid JSON ({err}): {text[:200]!r}") from None


def _check_format(tool_format: str) -> None:
    if tool_format not in TOOL_FORMATS:
        raise ConfigError(f"unknown tool format '{tool_format}'; choose one of: {', '.join(TOOL_FORMATS)}")
