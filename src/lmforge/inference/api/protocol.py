"""Request and response shapes of OpenAI's chat completions API, as far as a single local model serves it.

Validation is strict, as OpenAI's is: `"4"` is not an integer and `"yes"` not a boolean, so a client bug is a
400 naming the field rather than a guess. Fields a client may send that do not change what this server does
(`user`, `presence_penalty`, ...) are accepted, type-checked and ignored, as OpenAI clients send some by
default. Conversations OpenAI rejects are rejected here too: a tool result that answers no tool call, a tool
call left unanswered, missing or null content where content is required.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

INT64 = 2**63  # OpenAI's `seed` is a signed 64-bit integer; torch.manual_seed overflows past 2**64


def _invalid(kind: str, at: str, message: str, **context) -> PydanticCustomError:
    """A validation error about `at` (a field of the model being validated, or a dotted path from the request)."""
    return PydanticCustomError(kind, message, {**context, "at": at})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1)
    function_call: FunctionCall | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_or_text_parts(cls, value):
        # Checked before pydantic's union so the message says what content may be, not why each branch failed.
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise PydanticCustomError("content_type", "must be a string or a non-empty list of text parts")
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                got = f"a {kind!r} part" if isinstance(kind, str) else f"{type(part).__name__} {part!r:.40}"
                raise PydanticCustomError("content_part", "only text parts (type 'text') are served by this "
                                          "model, got {got}", {"got": got})
            if not isinstance(part.get("text"), str):
                raise PydanticCustomError("content_part", "a text part needs 'text', a string")
        return value

    @model_validator(mode="after")
    def _content_where_required(self):
        # OpenAI: only an assistant message that calls a tool may leave out its text.
        calls = self.role == "assistant" and (self.tool_calls or self.function_call)
        if self.content is None and not calls:
            raise _invalid("content_missing", "content", "a message from {role} needs content (a string or text "
                           "parts); only an assistant message with tool_calls may have none", role=self.role)
        if self.role == "tool" and self.tool_call_id is None:
            raise _invalid("tool_call_id_missing", "tool_call_id", "a tool message must name the tool call it "
                           "answers")
        if self.role == "function" and self.name is None:
            raise _invalid("name_missing", "name", "a function message must name its function")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # accepted and ignored, but a wrong type is still the client's bug worth a 400
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("tool_choice")
    @classmethod
    def _string_or_object(cls, value):
        if value is not None and not isinstance(value, (str, dict)):
            raise PydanticCustomError("tool_choice_type", "must be a string or an object")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _up_to_four_strings(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
            raise PydanticCustomError("stop_type", "must be a string or a list of up to 4 strings")
        if stops is not None and len(stops) > 4:
            raise PydanticCustomError("stop_count", "at most 4 stop sequences, got {count}", {"count": len(stops)})
        return stops

    @model_validator(mode="after")
    def _tool_results_answer_tool_calls(self):
        # OpenAI: tool messages answer the tool calls of the assistant message just before them, and every call
        # is answered before the conversation goes on.
        expected: set[str] | None = None  # the calls still unanswered; None: no tool message may come here
        for i, message in enumerate(self.messages):
            if message.role in ("tool", "function"):
                if expected is None:
                    raise _invalid("tool_without_call", f"messages.{i}.role", "a '{role}' message must answer a "
                                   "preceding assistant message with 'tool_calls'", role=message.role)
                expected.discard(message.tool_call_id or "")
                continue
            if expected:
                raise _invalid("tool_call_unanswered", f"messages.{i}", "the tool calls before this message are "
                               "unanswered: an assistant message with 'tool_calls' must be followed by tool "
                               "messages answering each 'tool_call_id' (missing: {ids})",
                               ids=", ".join(sorted(expected)))
            calls = message.role == "assistant" and (message.tool_calls or message.function_call)
            expected = {call.id for call in message.tool_calls or ()} if calls else None
        if expected:
            raise _invalid("tool_call_unanswered", f"messages.{len(self.messages) - 1}", "the last message's tool "
                           "calls are unanswered: send a tool message answering each 'tool_call_id' (missing: "
                           "{ids})", ids=", ".join(sorted(expected)))
        return self

    def openai_messages(self) -> list[dict]:
        """The messages as plain dicts (developer counts as system, function as tool)."""
        roles = {"developer": "system", "function": "tool"}
        return [{"role": roles.get(m.role, m.role), "content": m.text()} for m in self.messages]

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error envelope, which its clients turn into typed exceptions carrying the message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
