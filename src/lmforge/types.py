"""Typed contracts at each pipeline boundary.

raw record --(formats/)--> Conversation | PairSample --(processors/)--> Example --(collators)--> Batch

Conversations travel through `datasets.Dataset.map` as plain dicts, so each type converts to and from
one (`to_dict` / `from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

IGNORE_INDEX = -100
"""Label value the loss skips (PyTorch's cross_entropy default). The only place it is defined."""


class Role(StrEnum):
    """Speaker of a message, as in LLaMA-Factory.

    FUNCTION is an assistant's tool call (it is trained on like an assistant turn); OBSERVATION is the
    tool's answer (it sits on the prompt side like a user turn).
    """

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    FUNCTION = "function"
    OBSERVATION = "observation"


PROMPT_ROLES = (Role.USER, Role.OBSERVATION)
RESPONSE_ROLES = (Role.ASSISTANT, Role.FUNCTION)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass
class Conversation:
    """One normalised training sample.

    `messages` alternate prompt-side (user/observation) and response-side (assistant/function) turns,
    starting with a prompt turn. For sft it ends with a response turn; for generation it ends with a prompt
    turn. The system prompt and tool definitions are kept apart from the turns, as every template places
    them specially. For pretraining, the document text is the content of `messages[0]`.
    """

    messages: list[Message]
    system: str = ""
    tools: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [{"role": str(m.role), "content": m.content} for m in self.messages],
            "system": self.system,
            "tools": self.tools,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Conversation:
        return cls(
            messages=[Message(Role(m["role"]), m["content"]) for m in row["messages"]],
            system=row.get("system") or "",
            tools=row.get("tools") or "",
        )


@dataclass
class PairSample:
    """A preference sample: one prompt (a Conversation ending in a prompt turn) and two responses."""

    prompt: Conversation
    chosen: Message
    rejected: Message


@dataclass
class DropCounter:
    """Counts records dropped from one dataset, per reason, keeping the first few record numbers."""

    dataset: str
    keep_examples: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def drop(self, reason: str, record_index: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < self.keep_examples:
            seen.append(record_index)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = [
            f"{n} {reason} (records {', '.join(map(str, self.examples[reason]))}"
            + (", ..." if n > len(self.examples[reason]) else "")
            + ")"
            for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1])
        ]
        return f"dataset '{self.dataset}': dropped {self.total} records: " + "; ".join(parts)


class Example(TypedDict):
    """One tokenized sample as the processors emit it."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
