"""dataset_info.json entries and bare data paths -> DatasetSpec, and the errors users see for bad entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.dataset_info import Columns, Tags, resolve_datasets
from lmforge.errors import DataError


def write_info(root: Path, info: dict) -> Path:
    path = root / "dataset_info.json"
    path.write_text(json.dumps(info))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    return tmp_path


def test_entry_with_columns_and_tags(root):
    (root / "chat.jsonl").write_text("{}\n")
    write_info(
        root,
        {
            "chat": {
                "file_name": "chat.jsonl",
                "formatting": "sharegpt",
                "columns": {"messages": "turns", "system": "sys"},
                "tags": {"role_tag": "speaker", "user_tag": "me"},
                "num_samples": 3,
            }
        },
    )
    [spec] = resolve_datasets(["chat"], str(root))
    assert spec.name == "chat"
    assert spec.paths == (str(root / "chat.jsonl"),)
    assert spec.formatting == "sharegpt" and spec.ranking is False and spec.num_samples == 3
    assert spec.columns == Columns(messages="turns", system="sys")
    assert spec.tags == Tags(role_tag="speaker", user_tag="me")
    assert spec.configured_columns == ("messages", "system")
    assert spec.source == str(root / "dataset_info.json")


def test_openai_defaults_to_openai_names(root):
    write_info(root, {"o": {"file_name": "a.json", "formatting": "openai"}})
    [spec] = resolve_datasets(["o"], str(root))
    assert spec.columns.messages == "messages"
    assert (spec.tags.role_tag, spec.tags.content_tag, spec.tags.observation_tag) == ("role", "content", "tool")


def test_folder_expands_to_sorted_files(root):
    (root / "parts").mkdir()
    for name in ("b.jsonl", "a.jsonl", ".hidden.jsonl"):
        (root / "parts" / name).write_text("{}\n")
    write_info(root, {"p": {"file_name": "parts"}})
    [spec] = resolve_datasets(["p"], str(root))
    assert spec.paths == (str(root / "parts" / "a.jsonl"), str(root / "parts" / "b.jsonl"))


def test_unknown_entry_key_names_file_entry_key_and_nearest(root):
    info = write_info(root, {"a": {"file_name": "a.json", "format": "alpaca"}})
    with pytest.raises(DataError) as err:
        resolve_datasets(["a"], str(root))
    assert str(err.value) == f"{info}, entry 'a': unknown key 'format' (did you mean 'formatting'?)"


def test_misspelled_columns_key(root):
    write_info(root, {"a": {"file_name": "a.json", "colums": {"prompt": "q"}}})
    with pytest.raises(DataError, match=r"unknown key 'colums' \(did you mean 'columns'\?\)"):
        resolve_datasets(["a"], str(root))


def test_unknown_column_and_tag_keys(root):
    write_info(root, {"a": {"file_name": "a.json", "columns": {"promt": "q"}}})
    with pytest.raises(DataError, match=r"entry 'a': unknown column key 'promt' \(did you mean 'prompt'\?\)"):
        resolve_datasets(["a"], str(root))
    write_info(root, {"a": {"file_name": "a.json", "tags": {"role": "r"}}})
    with pytest.raises(DataError, match=r"unknown tag key 'role' \(did you mean 'role_tag'\?\)"):
        resolve_datasets(["a"], str(root))


def test_bad_formatting_value(root):
    write_info(root, {"a": {"file_name": "a.json", "formatting": "sharegtp"}})
    with pytest.raises(DataError, match=r"unknown formatting 'sharegtp' \(did you mean 'sharegpt'\?\)"):
        resolve_datasets(["a"], str(root))


@pytest.mark.parametrize("key", ["hf_hub_url", "ms_hub_url", "om_hub_url", "script_url"])
def test_remote_entries_explain_local_only(root, key):
    write_info(root, {"remote": {key: "org/data"}})
    with pytest.raises(DataError) as err:
        resolve_datasets(["remote"], str(root))
    assert f"'{key}' points at a remote dataset" in str(err.value)
    assert "local files only" in str(err.value) and '"file_name"' in str(err.value)


def test_only_requested_entries_are_checked(root):
    # A shared dataset_info.json holds hub entries and typos elsewhere; they matter only when asked for.
    write_info(root, {"a": {"file_name": "a.json"}, "hub": {"hf_hub_url": "x/y"}, "bad": {"colums": {}}})
    assert [s.name for s in resolve_datasets(["a"], str(root))] == ["a"]


def test_subset_and_folder_are_ignored(root):
    write_info(root, {"a": {"file_name": "a.json", "subset": "en", "folder": "x"}})
    [spec] = resolve_datasets(["a"], str(root))
    assert spec.paths == (str(root / "a.json"),)


def test_multimodal_columns_are_refused(root):
    write_info(root, {"a": {"file_name": "a.json", "columns": {"images": "images"}}})
    with pytest.raises(DataError, match="columns.images: multimodal data is not supported"):
        resolve_datasets(["a"], str(root))


def test_ranking_needs_chosen_and_rejected(root):
    write_info(root, {"a": {"file_name": "a.json", "ranking": True}})
    with pytest.raises(DataError, match="must set columns.chosen and columns.rejected"):
        resolve_datasets(["a"], str(root))


def test_unknown_name_suggests_entry(root):
    info = write_info(root, {"alpaca_en_demo": {"file_name": "a.json"}})
    with pytest.raises(DataError) as err:
        resolve_datasets(["alpaca_en_dem"], str(root))
    assert str(err.value).startswith(
        f"dataset 'alpaca_en_dem' is not an entry of {info} (did you mean 'alpaca_en_demo'?)"
    )


def test_missing_dataset_info(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'x': no dataset_info.json in dataset_dir"):
        resolve_datasets(["x"], str(tmp_path))


def test_missing_file_names_path_relative_to_dataset_dir(root):
    info = write_info(root, {"gone": {"file_name": "gone.json"}})
    with pytest.raises(DataError) as err:
        resolve_datasets(["gone"], str(root))
    message = str(err.value)
    assert f"data file 'gone.json' not found in dataset_dir '{root}'" in message
    assert f"fix 'file_name' in {info}" in message


@pytest.mark.parametrize(
    ("record", "formatting", "columns", "ranking"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "openai", {"messages": "messages"}, False),
        (
            {"conversations": [{"from": "human", "value": "q"}], "tools": "[]"},
            "sharegpt",
            {"messages": "conversations", "tools": "tools"},
            False,
        ),
        ({"instruction": "q", "output": "a", "system": "s"}, "alpaca", {"system": "system"}, False),
        ({"text": "a document"}, "alpaca", {"prompt": "text"}, False),
        (
            {"instruction": "q", "chosen": "a", "rejected": "b"},
            "alpaca",
            {"chosen": "chosen", "rejected": "rejected"},
            True,
        ),
    ],
)
def test_bare_path_infers_format(tmp_path, record, formatting, columns, ranking):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [spec] = resolve_datasets([str(path)], None)
    assert spec.paths == (str(path),)
    assert (spec.formatting, spec.ranking) == (formatting, ranking)
    assert {key: getattr(spec.columns, key) for key in spec.configured_columns} == columns


def test_bare_path_relative_to_dataset_dir(root):
    [spec] = resolve_datasets(["a.json"], str(root))
    assert spec.paths == (str(root / "a.json"),) and spec.formatting == "alpaca"


def test_entry_name_wins_over_file(root):
    write_info(root, {"a.json": {"file_name": "a.json", "columns": {"prompt": "instruction"}}})
    [spec] = resolve_datasets(["a.json"], str(root))
    assert spec.source is not None
