"""Files -> records -> merged conversations: readers, drops, column checks, mixing, splits, demo data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lmforge.data.loading import load_conversations
from lmforge.data.sources import file_fingerprint, read_records
from lmforge.data.splits import split_train_eval
from lmforge.errors import ConfigError, DataError

DEMO = Path("/work/shared/data/llamafactory-demo")


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_info(root: Path, info: dict) -> None:
    (root / "dataset_info.json").write_text(json.dumps(info))


def alpaca(n: int, tag: str = "") -> list[dict]:
    return [{"instruction": f"{tag}q{i}", "input": "", "output": f"{tag}a{i}"} for i in range(n)]


def user_texts(dataset) -> list[str]:
    return [row["messages"][0]["content"] for row in dataset]


# ---- sources -----------------------------------------------------------------------------------------------


def test_read_json_list_jsonl_and_jsonl_named_json(tmp_path):
    records = [{"a": 1}, {"a": 2}]
    assert read_records(write_json(tmp_path / "l.json", records)) == records
    assert read_records(write_jsonl(tmp_path / "l.jsonl", records)) == records
    assert read_records(write_jsonl(tmp_path / "lines.json", records)) == records  # JSON lines named .json


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    with pytest.raises(DataError) as err:
        read_records(path)
    assert str(err.value) == ("bad.jsonl line 4: invalid JSON (Expecting value at column 7) in " + str(path))


def test_malformed_json_list_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]')
    with pytest.raises(DataError, match=r"bad.json line 3: invalid JSON \(Expecting value at column 9\)"):
        read_records(path)


def test_single_object_json_is_explained(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{\n  "instruction": "q"\n}\n')
    with pytest.raises(DataError, match="holds one JSON object; expected a list of records"):
        read_records(path)


def test_read_csv_txt_parquet_arrow(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('instruction,output\nq1,"a, with comma"\nq2,a2\n')
    assert read_records(csv_path) == [
        {"instruction": "q1", "output": "a, with comma"},
        {"instruction": "q2", "output": "a2"},
    ]
    txt_path = tmp_path / "d.txt"
    txt_path.write_text("first line\n\n  \nsecond line\n")
    assert read_records(txt_path) == [{"text": "first line"}, {"text": "second line"}]

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"instruction": "q", "output": "a"}])
    pq.write_table(table, tmp_path / "d.parquet")
    assert read_records(tmp_path / "d.parquet") == [{"instruction": "q", "output": "a"}]
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert read_records(tmp_path / "d.arrow") == [{"instruction": "q", "output": "a"}]


def test_unsupported_extension(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx'"):
        read_records(path)


def test_file_fingerprint_follows_contents(tmp_path):
    a = write_json(tmp_path / "a.json", alpaca(2))
    first = file_fingerprint([a])
    assert first == file_fingerprint([str(a)]) and len(first) == 64
    write_json(a, alpaca(3))
    assert file_fingerprint([a]) != first


# ---- loading -----------------------------------------------------------------------------------------------


def test_csv_parquet_and_txt_datasets_load(tmp_path):
    (tmp_path / "d.csv").write_text("instruction,input,output\nq1,,a1\nq2,more,a2\n")
    (tmp_path / "corpus.txt").write_text("doc one\ndoc two\n")
    write_info(tmp_path, {"c": {"file_name": "d.csv"}, "t": {"file_name": "corpus.txt", "columns": {"prompt": "text"}}})
    ds, _ = load_conversations(["c"], str(tmp_path), stage="sft")
    assert ds.to_list() == [
        {
            "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
            "system": "",
            "tools": "",
        },
        {
            "messages": [{"role": "user", "content": "q2\nmore"}, {"role": "assistant", "content": "a2"}],
            "system": "",
            "tools": "",
        },
    ]
    ds, _ = load_conversations(["t"], str(tmp_path), stage="pt")
    assert ds.to_list() == [
        {"messages": [{"role": "user", "content": "doc one"}], "system": "", "tools": ""},
        {"messages": [{"role": "user", "content": "doc two"}], "system": "", "tools": ""},
    ]


def test_bare_path_dataset(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ],
    )
    ds, drops = load_conversations([str(path)], None, stage="sft")
    assert ds.to_list() == [
        {
            "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
            "system": "S",
            "tools": "",
        }
    ]
    assert drops[0].dataset == str(path) and drops[0].total == 0


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_drops_counted_per_reason_with_record_numbers(tmp_path):
    records = [
        {"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "fine"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "robot", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": " "}]},
        {"conversations": [{"from": "human", "value": "ok2"}, {"from": "gpt", "value": "fine2"}]},
    ]
    write_json(tmp_path / "chat.json", records)
    write_info(tmp_path, {"chat": {"file_name": "chat.json", "formatting": "sharegpt"}})
    capture = Capture()
    logging.getLogger("lmforge").addHandler(capture)
    try:
        ds, [drops] = load_conversations(["chat"], str(tmp_path), stage="sft")
    finally:
        logging.getLogger("lmforge").removeHandler(capture)
    assert user_texts(ds) == ["ok", "ok2"]
    assert drops.counts == {"unknown role 'robot'": 1, "empty response": 2, "turns not alternating": 1}
    assert drops.examples == {"unknown role 'robot'": [1], "empty response": [2, 4], "turns not alternating": [3]}
    # One summary per dataset, not one line per record.
    assert capture.messages == [
        (
            "dataset 'chat': dropped 4 records: 2 empty response (records 2, 4); 1 unknown role 'robot' (records 1); "
            "1 turns not alternating (records 3) (record numbers count from 0, in file order)"
        )
    ]


def test_every_record_dropped_is_an_error(tmp_path):
    write_json(tmp_path / "d.json", [{"question": "q", "answer": "a"}] * 3)
    write_info(tmp_path, {"d": {"file_name": "d.json"}})
    with pytest.raises(DataError) as err:
        load_conversations(["d"], str(tmp_path), stage="sft")
    message = str(err.value)
    assert message.startswith("dataset 'd': dropped 3 records: 3 missing prompt (records 0, 1, 2): none left")
    assert "the file's fields are: answer, question" in message


def test_missing_configured_column_names_entry_file_column_and_nearest(tmp_path):
    path = write_json(tmp_path / "d.json", [{"instruction": "q", "answer": "a"}])
    write_info(tmp_path, {"d": {"file_name": "d.json", "columns": {"response": "answers"}}})
    with pytest.raises(DataError) as err:
        load_conversations(["d"], str(tmp_path), stage="sft")
    assert str(err.value) == (
        f"dataset 'd': columns.response names field 'answers', which {path} does not have "
        f"(did you mean 'answer'?); fix the entry in {tmp_path / 'dataset_info.json'}"
    )


def test_concat_keeps_order_and_max_samples_truncates_each(tmp_path):
    write_json(tmp_path / "a.json", alpaca(5, "A"))
    write_json(tmp_path / "b.json", alpaca(5, "B"))
    write_info(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}})
    ds, drops = load_conversations(["a", "b"], str(tmp_path), stage="sft", max_samples=2)
    assert user_texts(ds) == ["Aq0", "Aq1", "Bq0", "Bq1"]
    assert [d.dataset for d in drops] == ["a", "b"]


def test_num_samples_is_seeded_and_repeats_past_the_end(tmp_path):
    write_json(tmp_path / "a.json", alpaca(4))
    write_info(tmp_path, {"a": {"file_name": "a.json", "num_samples": 6}})
    first, _ = load_conversations(["a"], str(tmp_path), stage="sft", seed=1)
    again, _ = load_conversations(["a"], str(tmp_path), stage="sft", seed=1)
    texts = user_texts(first)
    assert texts == user_texts(again) and len(texts) == 6
    assert sorted(set(texts)) == ["q0", "q1", "q2", "q3"]  # every record once before any repeat
    assert sorted(texts[:4]) == ["q0", "q1", "q2", "q3"]


def test_interleave_is_deterministic_with_seed(tmp_path):
    write_json(tmp_path / "a.json", alpaca(50, "A"))
    write_json(tmp_path / "b.json", alpaca(50, "B"))
    write_info(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}})

    def load(strategy: str, seed: int) -> list[str]:
        ds, _ = load_conversations(
            ["a", "b"], str(tmp_path), stage="sft", mix_strategy=strategy, interleave_probs=[0.8, 0.2], seed=seed
        )
        return user_texts(ds)

    under = load("interleave_under", 7)
    assert under == load("interleave_under", 7)
    assert under != load("interleave_under", 8)
    a_rows = [t for t in under if t.startswith("A")]
    b_rows = [t for t in under if t.startswith("B")]
    # Each dataset keeps its own order; sampling stops when the first (A, drawn 80% of the time) runs out.
    assert a_rows == [f"Aq{i}" for i in range(50)]
    assert b_rows == [f"Bq{i}" for i in range(len(b_rows))] and 0 < len(b_rows) < 50
    over = load("interleave_over", 7)
    assert {f"Aq{i}" for i in range(50)} | {f"Bq{i}" for i in range(50)} == set(over)


def test_interleave_probs_must_match_datasets(tmp_path):
    write_json(tmp_path / "a.json", alpaca(2))
    write_info(tmp_path, {"a": {"file_name": "a.json"}, "b": {"file_name": "a.json"}})
    with pytest.raises(ConfigError, match="interleave_probs has 3 values for 2 datasets"):
        load_conversations(
            ["a", "b"], str(tmp_path), stage="sft", mix_strategy="interleave_under", interleave_probs=[0.2, 0.3, 0.5]
        )
    with pytest.raises(ConfigError, match=r"unknown mix_strategy 'interleave'; choose one of: concat, interleave_under, interleave_over"):
        load_conversations(["a"], str(tmp_path), stage="sft", mix_strategy="interleave")


def test_ranking_rows_and_stage_checks(tmp_path):
    write_json(tmp_path / "pairs.json", [{"instruction": "q", "chosen": "good", "rejected": "bad"}])
    write_json(tmp_path / "a.json", alpaca(2))
    write_info(
        tmp_path,
        {
            "pairs": {
                "file_name": "pairs.json",
                "ranking": True,
                "columns": {"chosen": "chosen", "rejected": "rejected"},
            },
            "a": {"file_name": "a.json"},
        },
    )
    ds, _ = load_conversations(["pairs"], str(tmp_path), stage="dpo")
    assert ds.to_list() == [
        {
            "prompt_messages": [{"role": "user", "content": "q"}],
            "system": "",
            "tools": "",
            "chosen": {"role": "assistant", "content": "good"},
            "rejected": {"role": "assistant", "content": "bad"},
        }
    ]
    with pytest.raises(DataError, match=r"cannot mix ranking datasets \(pairs\) with single-response datasets \(a\)"):
        load_conversations(["pairs", "a"], str(tmp_path), stage="dpo")
    with pytest.raises(DataError, match="stage 'rm' trains on ranking data, but dataset 'a' has none"):
        load_conversations(["a"], str(tmp_path), stage="rm")
    with pytest.raises(DataError, match="dataset 'pairs' is ranking data"):
        load_conversations(["pairs"], str(tmp_path), stage="sft")


def test_kto_rows_carry_the_tag(tmp_path):
    write_json(
        tmp_path / "k.json",
        [dict(r, label=i == 0) for i, r in enumerate(alpaca(2))] + [dict(alpaca(1)[0], label="yes")],
    )
    write_info(tmp_path, {"k": {"file_name": "k.json", "columns": {"kto_tag": "label"}}, "a": {"file_name": "k.json"}})
    ds, [drops] = load_conversations(["k"], str(tmp_path), stage="kto")
    assert [row["kto_tag"] for row in ds] == [True, False]
    assert drops.counts == {"kto_tag is not true/false": 1}
    with pytest.raises(DataError, match="stage 'kto' needs a true/false label per record; set columns.kto_tag"):
        load_conversations(["a"], str(tmp_path), stage="kto")


# ---- splits ------------------------------------------------------------------------------------------------


@pytest.fixture
def ten(tmp_path):
    write_json(tmp_path / "a.json", alpaca(10))
    write_info(tmp_path, {"a": {"file_name": "a.json"}})
    return load_conversations(["a"], str(tmp_path), stage="sft")[0]


def test_val_size_fraction_and_count(ten):
    train, held = split_train_eval(ten, 0.2, seed=3)
    assert (len(train), len(held)) == (8, 2)
    assert sorted(user_texts(train) + user_texts(held)) == sorted(user_texts(ten))
    assert user_texts(held) == user_texts(split_train_eval(ten, 0.2, seed=3)[1])
    train, held = split_train_eval(ten, 3, seed=3)
    assert (len(train), len(held)) == (7, 3)


def test_val_size_too_large_names_the_key(ten):
    with pytest.raises(DataError, match=r"val_size 10 holds out 10 of 10 records, leaving none to train on"):
        split_train_eval(ten, 10, seed=0)


# ---- LLaMA-Factory's demo data, unchanged ------------------------------------------------------------------

needs_demo = pytest.mark.skipif(not (DEMO / "dataset_info.json").is_file(), reason=f"{DEMO} not present")


@needs_demo
def test_demo_alpaca_en():
    ds, [drops] = load_conversations(["alpaca_en_demo"], str(DEMO), stage="sft")
    raw = json.loads((DEMO / "alpaca_en_demo.json").read_text())
    assert len(ds) == 999 and drops.total == 0
    first = raw[0]
    prompt = "\n".join(p for p in (first["instruction"], first["input"]) if p)
    assert ds[0]["messages"] == [{"role": "user", "content": prompt}, {"role": "assistant", "content": first["output"]}]


@needs_demo
def test_demo_identity_with_placeholders():
    ds, [drops] = load_conversations(
        ["identity"], str(DEMO), stage="sft", placeholders={"name": "Forge", "author": "lmforge"}
    )
    assert len(ds) == len(json.loads((DEMO / "identity.json").read_text())) and drops.total == 0
    assert ds[0]["messages"] == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Hello! I am Forge, an AI assistant developed by lmforge. How can I assist you today?",
        },
    ]
    assert not any("{{" in m["content"] for row in ds for m in row["messages"])


@needs_demo
def test_demo_c4_for_pretraining():
    ds, [drops] = load_conversations(["c4_demo"], str(DEMO), stage="pt")
    lines = [json.loads(line)["text"] for line in (DEMO / "c4_demo.jsonl").read_text().splitlines() if line.strip()]
    assert len(ds) == len(lines) and drops.total == 0
    assert [row["messages"][0]["content"] for row in ds] == lines


@needs_demo
def test_demo_dpo_pairs():
    ds, [drops] = load_conversations(["dpo_en_demo"], str(DEMO), stage="dpo")
    raw = json.loads((DEMO / "dpo_en_demo.json").read_text())
    assert len(ds) == len(raw) and drops.total == 0
    assert ds[0]["chosen"] == {"role": "assistant", "content": raw[0]["chosen"]["value"]}
