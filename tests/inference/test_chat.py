"""The chat engine and `lmforge chat`: streamed greedy answers, multi-turn history, clear / exit, adapters."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lmforge.config import load_inference_config
from lmforge.inference.engine import ChatEngine


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def write(tmp_path, **keys) -> str:
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump({"template": "qwen", "do_sample": False, "max_new_tokens": 12, **keys}))
    return str(path)


def test_cli_streams_multi_turn_answers_and_obeys_clear_and_exit(tmp_path, tiny_model_dir, adapter_dir):
    for adapter in (None, adapter_dir):
        keys = {"model_name_or_path": str(tiny_model_dir)}
        if adapter:
            keys["adapter_name_or_path"] = str(adapter)
        cfg = write(tmp_path, **keys)
        engine = ChatEngine(load_inference_config(cfg))
        first = engine.reply([{"role": "user", "content": "hello"}])
        second = engine.reply([{"role": "user", "content": "hello"}, {"role": "assistant", "content": first},
                               {"role": "user", "content": "and then?"}])
        fresh = engine.reply([{"role": "user", "content": "again"}])
        assert first and second and fresh
        done = subprocess.run([sys.executable, "-m", "lmforge.cli", "chat", cfg],
                              input="hello\nand then?\nclear\nagain\nexit\nnever read\n",
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        out = done.stdout
        assert f"Assistant: {first}\n" in out
        assert f"Assistant: {second}\n" in out  # the second answer saw the first exchange
        assert out.index("History cleared.") < out.index(f"Assistant: {fresh}\n", out.index("History cleared."))
        assert out.count("Assistant: ") == 3


def test_adapter_changes_the_answer_and_stream_arrives_in_pieces(tmp_path, tiny_model_dir, adapter_dir):
    base = ChatEngine(load_inference_config(write(tmp_path, model_name_or_path=str(tiny_model_dir))))
    tuned = ChatEngine(load_inference_config(write(
        tmp_path, model_name_or_path=str(tiny_model_dir), adapter_name_or_path=str(adapter_dir))))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    pieces = list(base.stream(messages))
    assert len(pieces) > 1 and "".join(pieces) == base.reply(messages)
    assert tuned.reply(messages) != base.reply(messages)
    # a stop string ends the answer before its first occurrence, even when it spans two streamed pieces
    for engine in (base, tuned):
        full = engine.reply(messages)
        stop = full[len(full) // 2:][:2]
        assert len(stop) == 2
        assert engine.reply(messages, stop=["never there", stop]) == full[: full.index(stop)]
