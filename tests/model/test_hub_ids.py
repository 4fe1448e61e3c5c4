"""Hub ids (`org/name`) load from a Hugging Face cache the test builds, offline, where transformers finds them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config.loader import load_config, load_inference_config
from lmforge.errors import ModelError
from lmforge.hub_cache import hub_cache_dir, resolve_hub_id
from lmforge.model.loader import local_model_dir

MAIN = "a" * 40
OTHER = "b" * 40


def cache_repo(cache: Path, repo_id: str, files: Path, ref: str = "main", commit: str = MAIN) -> Path:
    """huggingface_hub's layout: models--org--name/refs/<ref> holds the commit; snapshots/<commit>/ the files."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    snapshot = folder / "snapshots" / commit
    if not snapshot.exists():
        shutil.copytree(files, snapshot)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hub_cache_dir() == tmp_path / "direct"


def test_train_with_a_cached_hub_id(hub_cache, tmp_path, tiny_model_dir, data_dir, monkeypatch):
    snapshot = cache_repo(hub_cache, "tiny-org/tiny-qwen2", tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    keys = {"model_name_or_path": "tiny-org/tiny-qwen2", "stage": "sft", "finetuning_type": "lora",
            "dataset": "numbers", "dataset_dir": str(data_dir), "template": "qwen", "cutoff_len": 64,
            "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"),
            "per_device_train_batch_size": 4, "max_steps": 2, "logging_steps": 1, "save_strategy": "no",
            "disable_tqdm": True, "report_to": "none"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(keys))
    cfg = load_config(tmp_path / "cfg.yaml")
    assert cfg.model.trust_remote_code is False and cfg.model.model_revision == "main"
    assert local_model_dir("tiny-org/tiny-qwen2") == snapshot
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()

    # the trained adapter, cached as a hub id too, loads on the cached base in the chat engine
    cache_repo(hub_cache, "tiny-org/tiny-lora", tmp_path / "out")
    from lmforge.inference.engine import ChatEngine

    engine = ChatEngine(load_inference_config(None, [  # no template: the run's, from the cached lmforge_run.json
        "model_name_or_path=tiny-org/tiny-qwen2", "adapter_name_or_path=tiny-org/tiny-lora",
        "max_new_tokens=4", "do_sample=false"]))
    assert engine.template.name == "qwen"
    assert isinstance(engine.reply([{"role": "user", "content": "Say the number 3"}]), str)


def test_chat_engine_and_revisions(hub_cache, tiny_model_dir, tiny_llama_dir, monkeypatch):
    from transformers import AutoConfig

    import lmforge.model.loader as loader_module
    from lmforge.inference.engine import ChatEngine

    cache_repo(hub_cache, "tiny-org/tiny", tiny_model_dir)  # main: qwen2
    other = cache_repo(hub_cache, "tiny-org/tiny", tiny_llama_dir, ref="v1", commit=OTHER)  # tag v1: llama
    seen = []
    real = AutoConfig.from_pretrained

    def spy(path, **kwargs):
        seen.append((Path(path), kwargs.get("trust_remote_code")))
        return real(path, **kwargs)

    monkeypatch.setattr(loader_module.AutoConfig, "from_pretrained", spy)
    engine = ChatEngine(load_inference_config(None, ["model_name_or_path=tiny-org/tiny", "template=qwen"]))
    assert engine.model.config.model_type == "qwen2"
    assert seen[-1] == (hub_cache / "models--tiny-org--tiny" / "snapshots" / MAIN, False)  # trust_remote_code off
    for revision in ("v1", OTHER):  # a tag, and a commit hash
        engine = ChatEngine(load_inference_config(None, [
            "model_name_or_path=tiny-org/tiny", f"model_revision={revision}", "template=llama3"]))
        assert engine.model.config.model_type == "llama"
        assert seen[-1] == (other, False)
    assert resolve_hub_id("tiny-org/tiny", "v2") is None


def test_a_missing_hub_id_says_where_it_looked_and_how_to_fetch(hub_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chat.yaml").write_text("model_name_or_path: Qwen/Qwen3-4B\n")
    assert main(["chat", "chat.yaml"]) == 2
    err = capsys.readouterr().err
    folder = hub_cache / "models--Qwen--Qwen3-4B"
    assert err == (f"lmforge: error: model_name_or_path: 'Qwen/Qwen3-4B' is not in the Hugging Face cache ({folder}); "
                   "lmforge does not download: run `huggingface-cli download Qwen/Qwen3-4B` (or set HF_HOME / "
                   "HF_HUB_CACHE to where it is)\n")
    with pytest.raises(ModelError, match=r"'Qwen/Qwen3-4B' is not in the Hugging Face cache"):
        local_model_dir("Qwen/Qwen3-4B")


def test_a_missing_revision_is_named(hub_cache, tiny_model_dir):
    cache_repo(hub_cache, "tiny-org/tiny", tiny_model_dir)
    with pytest.raises(ModelError) as info:
        local_model_dir("tiny-org/tiny", "v9")
    assert "at revision 'v9'" in str(info.value) and "huggingface-cli download tiny-org/tiny --revision v9" in str(
        info.value)


def test_a_local_directory_wins_over_the_cache(hub_cache, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "tiny-org" / "tiny")
    assert local_model_dir("tiny-org/tiny") == Path("tiny-org/tiny")
