"""Request and response shapes of OpenAI's chat completions API, as far as a single local model serves it.

Fields a client may send that do not change what this server does (`user`, `presence_penalty`, ...) are
accepted and ignored, as OpenAI clients send some by default; fields with a wrong type or range are a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

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
