"""alpaca / sharegpt / openai records -> Conversation / PairSample, checked on hand-made records."""

from __future__ import annotations

import json

import pytest

from lmforge.data.dataset_info import OPENAI_TAGS, Columns, DatasetSpec, Tags
from lmforge.data.formats import (
    FORMATS,
    InvalidRecord,
    convert_record,
    pair_from_dict,
    pair_to_dict,
)
from lmforge.types import Conversation, Message, PairSample, Role

U, A, F, O = Role.USER, Role.ASSISTANT, Role.FUNCTION, Role.OBSERVATION


def spec(formatting: str = "alpaca", ranking: bool = False, tags: Tags | None = None, **columns) -> DatasetSpec:
    defaults = Columns(messages="messages") if formatting == "openai" else Columns()
    tags = tags or (OPENAI_TAGS if formatting == "openai" else Tags())
    return DatasetSpec(
        "t",
        (),
        "t.json",
        formatting=formatting,
        ranking=ranking,
        columns=Columns(**{**defaults.__dict__, **columns}),
        tags=tags,
    )


def msgs(*turns: tuple[Role, str]) -> list[Message]:
    return [Message(role, content) for role, content in turns]


def reason(record: dict, data_spec: DatasetSpec, **kwargs) -> str:
    with pytest.raises(InvalidRecord) as err:
        convert_record(record, data_spec, **kwargs)
    return err.value.reason


def test_registry_names():
    assert FORMATS.names() == ["alpaca", "openai", "sharegpt"]


# ---- alpaca ------------------------------------------------------------------------------------------------


def test_alpaca_joins_instruction_and_input_with_newline():
    conv = convert_record({"instruction": "Translate", "input": "bonjour", "output": "hello"}, spec())
    assert conv == Conversation(msgs((U, "Translate\nbonjour"), (A, "hello")))


def test_alpaca_empty_input_is_left_out():
    conv = convert_record({"instruction": "Hi", "input": "", "output": "Hey"}, spec())
    assert conv.messages == msgs((U, "Hi"), (A, "Hey"))


def test_alpaca_history_system_and_tools():
    record = {
        "q": "And 3+3?",
        "a": "6",
        "hist": [["1+1?", "2"], ["2+2?", "4"]],
        "sys": "You are a calculator.",
        "fns": [{"name": "add"}],
    }
    conv = convert_record(record, spec(prompt="q", response="a", history="hist", system="sys", tools="fns"))
    assert conv == Conversation(
        msgs((U, "1+1?"), (A, "2"), (U, "2+2?"), (A, "4"), (U, "And 3+3?"), (A, "6")),
        system="You are a calculator.",
        tools='[{"name": "add"}]',
    )


def test_alpaca_ranking():
    record = {"instruction": "Pick", "input": "x", "chosen": "good", "rejected": "bad"}
    sample = convert_record(record, spec(ranking=True, chosen="chosen", rejected="rejected"))
    assert sample == PairSample(Conversation(msgs((U, "Pick\nx"))), Message(A, "good"), Message(A, "bad"))
    assert pair_to_dict(sample) == {
        "prompt_messages": [{"role": "user", "content": "Pick\nx"}],
        "system": "",
        "tools": "",
        "chosen": {"role": "assistant", "content": "good"},
        "rejected": {"role": "assistant", "content": "bad"},
    }
    assert pair_from_dict(pair_to_dict(sample)) == sample


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "", "input": "", "output": "a"}, "missing prompt"),
        ({"output": "a"}, "missing prompt"),
        ({"instruction": "q"}, "missing response field 'output'"),
        ({"instruction": "q", "output": "  "}, "empty response"),
        ({"instruction": 3, "output": "a"}, "prompt is not text"),
        (
            {"instruction": "q", "output": "a", "history": [["only one"]]},
            "history is not a list of [prompt, response] pairs",
        ),
    ],
)
def test_alpaca_invalid_records(record, expected):
    assert reason(record, spec(history="history")) == expected


def test_alpaca_ranking_invalid():
    data_spec = spec(ranking=True, chosen="chosen", rejected="rejected")
    assert reason({"instruction": "q", "rejected": "b"}, data_spec) == "missing chosen"
    assert reason({"instruction": "q", "chosen": "a", "rejected": ""}, data_spec) == "empty rejected"


def test_pretraining_text_with_no_response():
    # c4_demo: {"text": ...} with columns {"prompt": "text"}; pt reads messages[0].
    conv = convert_record({"text": "A document."}, spec(prompt="text"), allow_empty_response=True)
    assert conv == Conversation(msgs((U, "A document.")))
    assert reason({"text": "A document."}, spec(prompt="text")) == "missing response field 'output'"
    assert reason({"text": ""}, spec(prompt="text"), allow_empty_response=True) == "missing prompt"


# ---- sharegpt ----------------------------------------------------------------------------------------------


def sg(*turns: tuple[str, str], **extra) -> dict:
    return {"conversations": [{"from": role, "value": text} for role, text in turns], **extra}


def test_sharegpt_tool_conversation_with_system_turn():
    record = sg(
        ("system", "Use tools."),
        ("human", "Weather?"),
        ("function_call", '{"name": "weather", "arguments": {}}'),
        ("observation", "sunny"),
        ("gpt", "It is sunny."),
        tools='[{"name": "weather"}]',
        system="ignored: the system turn wins",
    )
    conv = convert_record(record, spec("sharegpt", tools="tools", system="system"))
    assert conv == Conversation(
        msgs((U, "Weather?"), (F, '{"name": "weather", "arguments": {}}'), (O, "sunny"), (A, "It is sunny.")),
        system="Use tools.",
        tools='[{"name": "weather"}]',
    )


def test_sharegpt_system_column_when_no_system_turn():
    conv = convert_record(sg(("human", "hi"), ("gpt", "hey"), system="Be kind."), spec("sharegpt", system="system"))
    assert conv.system == "Be kind." and conv.messages == msgs((U, "hi"), (A, "hey"))


def test_sharegpt_custom_tags():
    tags = Tags(role_tag="role", content_tag="text", user_tag="u", assistant_tag="bot")
    record = {"dialog": [{"role": "u", "text": "hi"}, {"role": "bot", "text": "hey"}]}
    conv = convert_record(record, spec("sharegpt", tags=tags, messages="dialog"))
    assert conv.messages == msgs((U, "hi"), (A, "hey"))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (sg(("human", "a"), ("xyz", "b")), "unknown role 'xyz'"),
        (sg(("human", "a"), ("human", "b")), "turns not alternating"),
        (sg(("gpt", "a"), ("human", "b")), "turns not alternating"),
        (sg(("human", "a"), ("gpt", "b"), ("human", "c")), "odd number of turns"),
        (sg(("human", "a"), ("gpt", "")), "empty response"),
        (sg(("human", "a"), ("gpt", "b"), ("system", "c"), ("gpt", "d")), "system turn after the first"),
        (sg(), "no turns"),
        ({"other": 1}, "missing messages"),
        ({"conversations": [{"value": "a"}]}, "message without 'from'"),
        ({"conversations": [{"from": "human", "value": None}]}, "message without text in 'value'"),
    ],
)
def test_sharegpt_invalid_records(record, expected):
    assert reason(record, spec("sharegpt")) == expected


def test_sharegpt_ranking():
    data_spec = spec("sharegpt", ranking=True, chosen="chosen", rejected="rejected")
    record = sg(("human", "q"), chosen={"from": "gpt", "value": "good"}, rejected={"from": "gpt", "value": "bad"})
    assert convert_record(record, data_spec) == PairSample(
        Conversation(msgs((U, "q"))), Message(A, "good"), Message(A, "bad")
    )
    even = sg(
        ("human", "q"), ("gpt", "a"), chosen={"from": "gpt", "value": "x"}, rejected={"from": "gpt", "value": "y"}
    )
    assert reason(even, data_spec) == "even number of turns"
    bad_role = sg(("human", "q"), chosen={"from": "human", "value": "x"}, rejected={"from": "gpt", "value": "y"})
    assert reason(bad_role, data_spec) == "chosen is not an assistant turn"


# ---- openai ------------------------------------------------------------------------------------------------


def oa(*messages: dict, **extra) -> dict:
    return {"messages": list(messages), **extra}


def test_openai_system_user_assistant():
    record = oa(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    )
    assert convert_record(record, spec("openai")) == Conversation(msgs((U, "2+2?"), (A, "4")), system="Be brief.")


def test_openai_tool_calls_and_merged_tool_results():
    call = {"type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    mul = {"type": "function", "function": {"name": "mul", "arguments": {"a": 3}}}
    record = oa(
        {"role": "user", "content": [{"type": "text", "text": "Compute "}, {"type": "text", "text": "both."}]},
        {"role": "assistant", "content": None, "tool_calls": [call, mul]},
        {"role": "tool", "content": "3"},
        {"role": "tool", "content": "3"},
        {"role": "assistant", "content": "3 and 3."},
        tools=[{"type": "function", "function": {"name": "add"}}],
    )
    conv = convert_record(record, spec("openai", tools="tools"))
    calls = json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "mul", "arguments": {"a": 3}}])
    assert conv == Conversation(
        msgs((U, "Compute both."), (F, calls), (O, "3\n</tool_response>\n<tool_response>\n3"), (A, "3 and 3.")),
        tools='[{"type": "function", "function": {"name": "add"}}]',
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (oa({"role": "user", "content": "a"}, {"role": "critic", "content": "b"}), "unknown role 'critic'"),
        (oa({"role": "user", "content": "a"}, {"role": "user", "content": "b"}), "turns not alternating"),
        (
            oa({"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "b"}),
            "non-text content part 'image_url'",
        ),
        (
            oa({"role": "user", "content": "a"}, {"role": "assistant", "content": None}),
            "message without text in 'content'",
        ),
    ],
)
def test_openai_invalid_records(record, expected):
    assert reason(record, spec("openai")) == expected


def test_openai_ranking():
    data_spec = spec("openai", ranking=True, chosen="chosen", rejected="rejected")
    record = oa(
        {"role": "user", "content": "q"},
        chosen={"role": "assistant", "content": "good"},
        rejected={"role": "assistant", "content": "bad"},
    )
    assert convert_record(record, data_spec) == PairSample(
        Conversation(msgs((U, "q"))), Message(A, "good"), Message(A, "bad")
    )


# ---- placeholders ------------------------------------------------------------------------------------------


def test_placeholders_fill_known_keys_and_keep_unknown():
    record = {
        "instruction": "Who is {{name}}?",
        "output": "I am {{name}} by {{ author }}, see {{unknown}}.",
        "s": "{{name}} here",
    }
    conv = convert_record(record, spec(system="s"), placeholders={"name": "Forge", "author": "lmforge"})
    assert conv == Conversation(
        msgs((U, "Who is Forge?"), (A, "I am Forge by lmforge, see {{unknown}}.")), system="Forge here"
    )


def test_placeholders_in_ranking_responses():
    record = {"instruction": "hi", "chosen": "I am {{name}}", "rejected": "I am nobody"}
    sample = convert_record(
        record, spec(ranking=True, chosen="chosen", rejected="rejected"), placeholders={"name": "F"}
    )
    assert sample.chosen == Message(A, "I am F")
