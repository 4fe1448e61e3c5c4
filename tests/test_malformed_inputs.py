"""A sweep of malformed inputs through the real CLI: each one fails with one clear line, never a traceback,
and is never accepted silently.

Every data reader (json, jsonl, csv, txt, parquet, and dataset_info.json itself) gets non-UTF-8, UTF-16,
binary, gzipped, truncated and empty files, both through a dataset_info.json entry and as a bare path in
`dataset:`, under `lmforge data validate` (which reads on and lists problems as file:line) and `lmforge
train`. Model directories, a corrupt trainer_state.json on resume, `lmforge tokenize` inputs and options,
and memmap meta.json files missing a field go through `lmforge train` / `lmforge tokenize`.

`main(argv)` runs in-process: an exception escaping it is what a user would see as a traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main

RECORDS = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(6)]
BAD_LINE = 3  # 1-based line of the record that gets a non-UTF-8 byte in the per-line formats
BINARY = random.Random(0).randbytes(600)  # an image or archive renamed to .json, say


def run_cli(argv: list[str], capfd) -> tuple[int | None, str, str, BaseException | None]:
    """(exit code, stdout, stderr, escaped exception) of one in-process CLI call."""
    try:
        code, escaped = main(argv), None
    except SystemExit as exc:  # argparse usage errors
        code, escaped = exc.code, None
    except Exception as exc:  # noqa: BLE001 - a traceback is exactly what this sweep looks for
        code, escaped = None, exc
    out, err = capfd.readouterr()
    return code, out, err, escaped


def assert_clear_failure(result, *fragments: str) -> str:
    """A non-zero exit with one `lmforge: error:` line holding every fragment; returns that line."""
    code, _out, err, escaped = result
    assert escaped is None, f"traceback: {type(escaped).__name__}: {escaped}"
    assert code not in (0, None), f"accepted silently:\n{err[-2000:]}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lmforge: error:")]
    assert len(lines) == 1, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- data files ------------------------------------------------------------------------------------------


def good_bytes(kind: str, non_utf8_line: int | None = None) -> bytes:
    """The six records as a file of `kind`; `non_utf8_line` puts a Latin-1 byte into that line's record."""
    records = [dict(r) for r in RECORDS]
    marker = "\u00e9"  # é: one byte in Latin-1, two in UTF-8
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), sink)
        return sink.getvalue()
    if kind == "json":
        lines = ["["] + [json.dumps(r) + ("," if i < len(records) - 1 else "") for i, r in enumerate(records)] + ["]"]
    elif kind == "jsonl":
        lines = [json.dumps(r) for r in records]
    elif kind == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        lines = buffer.getvalue().splitlines()
    else:  # txt: one document per line
        lines = [r["output"] for r in records]
    data = []
    for number, line in enumerate(lines, start=1):
        if number == non_utf8_line:
            line = line.replace("number", f"num{marker}ber")
            data.append(line.encode("latin-1"))
        else:
            data.append(line.encode("utf-8"))
    return b"\n".join(data) + b"\n"


def defect_bytes(kind: str, defect: str) -> bytes:
    good = good_bytes(kind)
    if defect == "non_utf8":
        return good_bytes(kind, non_utf8_line=BAD_LINE)
    if defect == "utf16":
        return good.decode("utf-8").encode("utf-16")
    if defect == "binary":
        return BINARY
    if defect == "gzipped":  # a .gz saved under the plain name
        return gzip.compress(good)
    if defect == "truncated":  # cut inside a record (for parquet: inside the footer)
        return good[: int(len(good) * 0.6)] if kind != "parquet" else good[:-20]
    if defect == "empty":
        return b""
    raise ValueError(defect)


KINDS = ("json", "jsonl", "csv", "txt", "parquet")
DEFECTS = ("non_utf8", "utf16", "binary", "gzipped", "truncated", "empty")
# Defects with no meaning for a binary format, or that leave a txt file readable (a truncated line of text is
# still text: nothing can tell it from a short line).
SKIP = {("parquet", "non_utf8"), ("parquet", "utf16"), ("txt", "truncated")}
DATA_CASES = [(k, d) for k in KINDS for d in DEFECTS if (k, d) not in SKIP]


def write_config(tmp_path: Path, model_dir: Path, **keys) -> Path:
    cfg = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "template": "qwen",
        "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"),
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "cutoff_len": 64,
        "disable_tqdm": True,
        "report_to": "none",
    }
    cfg.update(keys)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def data_config(tmp_path: Path, model_dir: Path, kind: str, payload: bytes, route: str) -> tuple[Path, str]:
    """A config reading `payload` as a .`kind` file, through a dataset_info entry or as a bare path."""
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    name = f"bad.{kind}"
    (root / name).write_bytes(payload)
    stage = "pt" if kind == "txt" else "sft"  # a txt file holds documents, which only pt trains on
    if route == "entry":
        entry = {"file_name": name} | ({"columns": {"prompt": "text"}} if kind == "txt" else {})
        (root / "dataset_info.json").write_text(json.dumps({"bad": entry}))
        dataset = "bad"
    else:
        dataset = str(root / name)
    return write_config(tmp_path, model_dir, dataset_dir=str(root), dataset=dataset, stage=stage), name


@pytest.mark.parametrize("route", ["entry", "bare"])
@pytest.mark.parametrize("kind", KINDS)
def test_good_file_passes(tmp_path, capfd, tiny_model_dir, kind, route):
    """The baseline every defect below starts from: validate accepts the intact file."""
    config, _ = data_config(tmp_path, tiny_model_dir, kind, good_bytes(kind), route)
    code, out, err, escaped = run_cli(["data", "validate", str(config)], capfd)
    assert escaped is None and code == 0, out + err


@pytest.mark.parametrize("route", ["entry", "bare"])
@pytest.mark.parametrize("kind,defect", DATA_CASES)
def test_data_validate(tmp_path, capfd, tiny_model_dir, kind, defect, route):
    config, name = data_config(tmp_path, tiny_model_dir, kind, defect_bytes(kind, defect), route)
    code, out, err, escaped = run_cli(["data", "validate", str(config)], capfd)
    assert escaped is None, f"traceback: {type(escaped).__name__}: {escaped}"
    assert code not in (0, None), f"accepted silently:\n{out}{err}"
    assert "Traceback" not in err
    # validate names a bad file in a `lmforge: error:` line, or lists it among the problems on stdout
    errors = [line for line in err.splitlines() if line.startswith("lmforge: error:")]
    problems = [line for line in out.splitlines() if name in line]
    assert (len(errors) == 1 and name in errors[0]) or (not errors and problems), out + err


@pytest.mark.parametrize("route", ["entry", "bare"])
@pytest.mark.parametrize("kind,defect", DATA_CASES)
def test_data_train(tmp_path, capfd, tiny_model_dir, kind, defect, route):
    config, name = data_config(tmp_path, tiny_model_dir, kind, defect_bytes(kind, defect), route)
    assert_clear_failure(run_cli(["train", str(config)], capfd), name)


@pytest.mark.parametrize("route", ["entry", "bare"])
@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "txt"])
def test_non_utf8_line_is_named_and_the_rest_read(tmp_path, capfd, tiny_model_dir, kind, route):
    """One Latin-1 line: validate names it by line number and still reads (and counts good) every other record;
    train refuses the file naming that line, as it does an invalid JSON line."""
    config, name = data_config(tmp_path, tiny_model_dir, kind, defect_bytes(kind, "non_utf8"), route)
    code, out, err, escaped = run_cli(["data", "validate", str(config)], capfd)
    assert escaped is None and code == 1, out + err
    assert f"{name}:{BAD_LINE}: not UTF-8" in out, out
    if kind in ("jsonl", "txt"):  # the line-per-record formats read on past the bad line
        assert "6 records, 5 good, 1 bad" in out, out
    line = assert_clear_failure(run_cli(["train", str(config)], capfd), name, f"line {BAD_LINE}", "not UTF-8")
    assert "UTF-8" in line


def test_bare_alpaca_file_without_response_column_names_it(tmp_path, capfd, tiny_model_dir):
    records = [{"instruction": r["instruction"], "answer": r["output"]} for r in RECORDS]
    root = tmp_path / "data"
    root.mkdir()
    (root / "noout.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    config = write_config(tmp_path, tiny_model_dir, dataset_dir=str(root), dataset=str(root / "noout.jsonl"))
    assert_clear_failure(run_cli(["train", str(config)], capfd), "noout.jsonl", "'output'")
    code, out, err, _ = run_cli(["data", "validate", str(config)], capfd)
    assert code == 1 and "'output'" in out, out + err


# --- dataset_info.json -----------------------------------------------------------------------------------

INFO = {"bad": {"file_name": "good.jsonl"}}


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("defect", ["non_utf8", "utf16", "binary", "gzipped", "truncated", "empty"])
def test_dataset_info(tmp_path, capfd, tiny_model_dir, defect, command):
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.jsonl").write_bytes(good_bytes("jsonl"))
    text = json.dumps(INFO, indent=2)
    payload = {
        "non_utf8": text.replace('"bad"', '"b\u00e9d"').encode("latin-1"),
        "utf16": text.encode("utf-16"),
        "binary": BINARY,
        "gzipped": gzip.compress(text.encode()),
        "truncated": text.encode()[: len(text) // 2],
        "empty": b"",
    }[defect]
    (root / "dataset_info.json").write_bytes(payload)
    config = write_config(tmp_path, tiny_model_dir, dataset_dir=str(root), dataset="bad")
    argv = ["data", "validate", str(config)] if command == "validate" else ["train", str(config)]
    assert_clear_failure(run_cli(argv, capfd), "dataset_info.json")


@pytest.mark.parametrize(("entry", "message"), [
    ({"formatting": ["alpaca"]}, "'formatting' must be one name"),
    ({"formatting": "alpacca"}, "did you mean 'alpaca'?"),
    ({"columns": "prompt"}, "'columns' must be an object"),
    ({"ranking": "yes"}, "'ranking' must be true or false"),
    ({"split": ["train"]}, "'split' must be a split name"),
    ({"num_samples": 0}, "'num_samples' must be a positive integer"),
    ({"columns": {"prompt": 3}}, "columns.prompt must be a field name"),
])
def test_dataset_info_values_of_the_wrong_type_name_the_key(tmp_path, capfd, tiny_model_dir, entry, message):
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.jsonl").write_bytes(good_bytes("jsonl"))
    (root / "dataset_info.json").write_text(json.dumps({"bad": {"file_name": "good.jsonl", **entry}}))
    config = write_config(tmp_path, tiny_model_dir, dataset_dir=str(root), dataset="bad")
    assert_clear_failure(run_cli(["data", "validate", str(config)], capfd), "entry 'bad'", message)


def test_validate_empty_file_fails_as_train_does(tmp_path, capfd, tiny_model_dir):
    config, name = data_config(tmp_path, tiny_model_dir, "jsonl", b"", "entry")
    train_line = assert_clear_failure(run_cli(["train", str(config)], capfd), name)
    validate_line = assert_clear_failure(run_cli(["data", "validate", str(config)], capfd), name)
    assert validate_line == train_line


# --- model directories -----------------------------------------------------------------------------------


def _safetensors(directory: Path) -> Path:
    return next(directory.glob("*.safetensors"))


def _edit_config(directory: Path, change) -> None:
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))


def _add_layer(config: dict) -> None:
    """One decoder layer more than the weights hold (transformers would initialise it randomly)."""
    config["num_hidden_layers"] += 1
    if "layer_types" in config:
        config["layer_types"].append(config["layer_types"][-1])


MODEL_DEFECTS = {  # defect -> (spoil the copied model directory, what the message names besides the directory)
    "unknown_model_type": (lambda d: _edit_config(d, lambda c: c.update(model_type="qwen9")), "config.json",
                           "qwen9"),
    "missing_model_type": (lambda d: _edit_config(d, lambda c: c.pop("model_type")), "config.json", "model_type"),
    "config_not_json": (lambda d: (d / "config.json").write_text('{"model_type": "qwen2",'), "config.json", ""),
    "shape_mismatch": (lambda d: _edit_config(d, lambda c: c.update(intermediate_size=c["intermediate_size"] * 2)),
                       "", "shape"),
    "config_has_more_layers": (lambda d: _edit_config(d, _add_layer), "", "lack"),
    "truncated_weights": (lambda d: _safetensors(d).write_bytes(_safetensors(d).read_bytes()[:5000]),
                          ".safetensors", "truncated"),
    "empty_weights": (lambda d: _safetensors(d).write_bytes(b""), ".safetensors", "empty"),
    "binary_weights": (lambda d: _safetensors(d).write_bytes(BINARY), ".safetensors", ""),
}


@pytest.mark.parametrize("defect", list(MODEL_DEFECTS))
def test_model_directory(tmp_path, capfd, tiny_model_dir, defect):
    spoil, *fragments = MODEL_DEFECTS[defect]
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    spoil(model)
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.jsonl").write_bytes(good_bytes("jsonl"))
    config = write_config(tmp_path, model, dataset_dir=str(root), dataset=str(root / "good.jsonl"))
    assert_clear_failure(run_cli(["train", str(config)], capfd), str(model), *filter(None, fragments))


# --- a checkpoint with a corrupt trainer_state.json ------------------------------------------------------


@pytest.mark.parametrize("state", ["truncated", "empty", "binary", "not_an_object"])
def test_resume_from_corrupt_trainer_state(tmp_path, capfd, tiny_model_dir, state):
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.jsonl").write_bytes(good_bytes("jsonl"))
    out = tmp_path / "out"
    for step in (1, 2):  # checkpoint-1 is intact; the newest, checkpoint-2, has a damaged trainer state
        checkpoint = out / f"checkpoint-{step}"
        shutil.copytree(tiny_model_dir, checkpoint)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    payload = {"truncated": b'{"global_step": 2, "log_hi', "empty": b"", "binary": BINARY,
               "not_an_object": b"[1, 2]"}[state]
    (out / "checkpoint-2" / "trainer_state.json").write_bytes(payload)
    config = write_config(tmp_path, tiny_model_dir, dataset_dir=str(root), dataset=str(root / "good.jsonl"),
                          resume_from_checkpoint=True, max_steps=3)
    assert_clear_failure(run_cli(["train", str(config)], capfd), "checkpoint-2", "trainer_state.json",
                         "checkpoint-1")


# --- lmforge tokenize and memmap shards ------------------------------------------------------------------


def _jsonl_corpus() -> bytes:
    return "".join(json.dumps({"text": f"document {i} " + "lorem ipsum " * (i + 3)}) + "\n" for i in range(40)).encode()


def _parquet_corpus() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in _jsonl_corpus().splitlines()]), sink)
    return sink.getvalue()


TOKENIZE_INPUTS = {
    "gz_corrupt": ("c.jsonl.gz", lambda: BINARY),
    "gz_truncated": ("c.jsonl.gz", lambda: (lambda z: z[: len(z) // 2])(gzip.compress(_jsonl_corpus()))),
    "gz_not_gzip": ("c.jsonl.gz", _jsonl_corpus),
    "gz_non_utf8": ("c.jsonl.gz", lambda: gzip.compress(_jsonl_corpus().replace(b"document 5", b"docum\xe9nt 5"))),
    "gz_binary": ("c.txt.gz", lambda: gzip.compress(BINARY)),
    "parquet_corrupt": ("c.parquet", lambda: BINARY),
    "parquet_truncated": ("c.parquet", lambda: _parquet_corpus()[:-30]),
    "parquet_empty": ("c.parquet", lambda: b""),
    "jsonl_utf16": ("c.jsonl", lambda: _jsonl_corpus().decode().encode("utf-16")),
    "txt_binary": ("c.txt", lambda: BINARY),
}


@pytest.mark.parametrize("case", list(TOKENIZE_INPUTS))
def test_tokenize_input(tmp_path, capfd, tiny_model_dir, case):
    name, payload = TOKENIZE_INPUTS[case]
    (tmp_path / name).write_bytes(payload())
    argv = ["tokenize", str(tmp_path / name), "--tokenizer", str(tiny_model_dir), "--output", str(tmp_path / "o"),
            "--workers", "1", "--quiet"]
    assert_clear_failure(run_cli(argv, capfd), name)
    assert not (tmp_path / "o" / "meta.json").exists()


@pytest.mark.parametrize("case", ["output_is_a_file", "batch_size_0", "batch_size_negative", "shard_tokens_0",
                                  "workers_negative"])
def test_tokenize_options(tmp_path, capfd, tiny_model_dir, case):
    (tmp_path / "c.jsonl").write_bytes(_jsonl_corpus())
    output = tmp_path / "o"
    extra, fragment = {
        "output_is_a_file": ([], "--output"),
        "batch_size_0": (["--batch-size", "0"], "--batch-size"),
        "batch_size_negative": (["--batch-size", "-3"], "--batch-size"),
        "shard_tokens_0": (["--shard-tokens", "0"], "--shard-tokens"),
        "workers_negative": (["--workers", "-1"], "--workers"),
    }[case]
    if case == "output_is_a_file":
        output.write_text("not a directory")
    argv = ["tokenize", str(tmp_path / "c.jsonl"), "--tokenizer", str(tiny_model_dir), "--output", str(output),
            "--workers", "1", "--quiet", *extra]
    assert_clear_failure(run_cli(argv, capfd), fragment)
    if case == "output_is_a_file":
        assert output.read_text() == "not a directory"


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("shards")
    (root / "c.jsonl").write_bytes(_jsonl_corpus())
    assert main(["tokenize", str(root / "c.jsonl"), "--tokenizer", str(tiny_model_dir), "--output",
                 str(root / "shards"), "--workers", "1", "--quiet"]) == 0
    return root / "shards"


def _drop(path: tuple[str | int, ...]):
    def spoil(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return spoil


META_DEFECTS = {  # defect -> (spoil meta, what the message must name)
    "no dtype": (_drop(("dtype",)), "'dtype'"),
    "no shards": (_drop(("shards",)), "'shards'"),
    "no format": (_drop(("format",)), "'format'"),
    "no tokenizer": (_drop(("tokenizer",)), "'tokenizer'"),
    "no num_tokens": (_drop(("shards", 0, "num_tokens")), "'shards[0].num_tokens'"),
    "no tokens": (_drop(("shards", 0, "tokens")), "'shards[0].tokens'"),
    "no index": (_drop(("shards", 0, "index")), "'shards[0].index'"),
    "bad dtype": (lambda meta: meta.update(dtype="float128x"), "'dtype'"),
    "shards not a list": (lambda meta: meta.update(shards={"a": 1}), "'shards'"),
    "not an object": (lambda meta: meta.clear(), "'format'"),
}


@pytest.mark.parametrize("defect", list(META_DEFECTS))
def test_memmap_meta(tmp_path, capfd, tiny_model_dir, shards_dir, defect):
    spoil, fragment = META_DEFECTS[defect]
    shards = tmp_path / "shards"
    shutil.copytree(shards_dir, shards)
    meta = json.loads((shards / "meta.json").read_text())
    spoil(meta)
    (shards / "meta.json").write_text(json.dumps(meta))
    config = write_config(tmp_path, tiny_model_dir, stage="pt", memmap_path=str(shards), cutoff_len=16)
    assert_clear_failure(run_cli(["train", str(config)], capfd), "meta.json", fragment)
