"""Session fixtures: a real tiny model and tokenizer on disk, loaded through from_pretrained by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from lmforge.model.from_config import create_model

    return create_model("tiny-qwen2", tmp_path_factory.mktemp("models") / "tiny-qwen2", seed=0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from lmforge.model.from_config import create_model

    return create_model("tiny-llama", tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def demo_result(tmp_path_factory):
    """`lmforge demo` run once (pretrain, SFT, eval, chat, check files) at seed 0: the demo test checks it, and the
    GRPO end-to-end test starts its weak SFT checkpoint from the demo's pretrained model."""
    from lmforge.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A dataset_dir with small alpaca, sharegpt and plain-text datasets of our own."""
    root = tmp_path / "data"
    root.mkdir()
    alpaca = [
        {"instruction": f"Say the number {i}", "input": "" if i % 2 else "please", "output": f"The number is {i}."}
        for i in range(40)
    ]
    (root / "numbers.json").write_text(json.dumps(alpaca))
    sharegpt = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": f"Hi {i}"},
                {"from": "gpt", "value": f"Hello {i}!"},
                {"from": "human", "value": "Bye"},
                {"from": "gpt", "value": "Bye."},
            ]
        }
        for i in range(20)
    ]
    (root / "chats.json").write_text(json.dumps(sharegpt))
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"text": f"Document {i}: " + " ".join(["lorem ipsum dolor"] * (i % 7 + 1))}) + "\n")
    info = {
        "numbers": {"file_name": "numbers.json"},
        "chats": {"file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}},
        "corpus": {"file_name": "corpus.jsonl", "columns": {"prompt": "text"}},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root
