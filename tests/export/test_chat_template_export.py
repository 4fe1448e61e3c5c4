"""`lmforge export` writes the run's template as the tokenizer's chat_template: plain transformers then prompts
the merged model with the ids `lmforge chat` sends, and its greedy reply is `lmforge chat`'s reply."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.cli import main
from lmforge.config import load_inference_config
from lmforge.config.data_args import DataArguments
from lmforge.data.templates import TEMPLATES
from lmforge.inference.engine import ChatEngine

CHAT_HAS_THINKING_KEY = "enable_thinking" in DataArguments.__dataclass_fields__
CONVERSATIONS = {
    "no-system": [{"role": "user", "content": "Name a colour."}],
    "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    "multi-turn": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi, how can I help?"},
                   {"role": "user", "content": "and then?"}],
}


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter whose every weight is random (so it changes the answers), without its run info."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def export(tmp_path, tiny_model_dir, lora_dir, run_info: dict, **keys):
    """Export base + adapter, the adapter's lmforge_run.json being `run_info`; returns the export dir."""
    (lora_dir / "lmforge_run.json").write_text(json.dumps(run_info))
    out = tmp_path / "merged"
    cfg = tmp_path / "export.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "adapter_name_or_path": str(lora_dir),
                                   "export_dir": str(out), "export_dtype": "fp32", **keys}))
    assert main(["export", str(cfg)]) == 0
    return out


def chat_template_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.parametrize(("template", "enable_thinking"), [("qwen", None), ("qwen3", False), ("qwen3", True)])
def test_merged_model_answers_through_plain_transformers_as_lmforge_chat(tmp_path, tiny_model_dir, lora_dir,
                                                                         template, enable_thinking, caplog):
    run = {"template": template}
    chat = {"model_name_or_path": "", "do_sample": False, "max_new_tokens": 12}
    if enable_thinking is not None:
        if template not in TEMPLATES:
            pytest.skip(f"no '{template}' template yet")
        # As training records it (its data keys), and as `lmforge chat` is told it.
        run.update(enable_thinking=enable_thinking, data={"template": template, "enable_thinking": enable_thinking})
        if CHAT_HAS_THINKING_KEY:
            chat["enable_thinking"] = enable_thinking
    with caplog.at_level("INFO", logger="lmforge"):
        out = export(tmp_path, tiny_model_dir, lora_dir, run)
    written = f" (enable_thinking {enable_thinking})" if enable_thinking is not None else ""
    assert f"chat template: lmforge template '{template}'{written} written to the tokenizer" in caplog.text

    tokenizer = AutoTokenizer.from_pretrained(out)  # plain transformers, no lmforge
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(yaml.safe_dump({**chat, "model_name_or_path": str(out)}))
    engine = ChatEngine(load_inference_config(str(cfg)))  # `lmforge chat` on the export dir
    assert engine.template.name == template  # found through the copied lmforge_run.json
    if enable_thinking is not None:
        if not CHAT_HAS_THINKING_KEY:  # until chat has the key: the template as get_template would give it
            engine.template = replace(engine.template, enable_thinking=enable_thinking)
        ends_with_block = tokenizer.decode(chat_template_ids(tokenizer, CONVERSATIONS["no-system"])).endswith(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert ends_with_block == (not enable_thinking)

    for messages in CONVERSATIONS.values():
        ids = chat_template_ids(tokenizer, messages)
        assert ids == engine.prompt_ids(messages)
        with torch.no_grad():  # the exported generation config carries the stop tokens and pad id
            generated = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       do_sample=False, max_new_tokens=12)[0, len(ids):]
        reply = tokenizer.decode(generated, skip_special_tokens=engine.generation.skip_special_tokens)
        assert reply and reply == engine.reply(messages)


def test_run_default_system_is_written_and_auto_keeps_the_tokenizers_own(tmp_path, tiny_model_dir, lora_dir,
                                                                         caplog):
    user = [{"role": "user", "content": "Hi"}]
    out = export(tmp_path, tiny_model_dir, lora_dir, {"template": "chatml", "default_system": "Run system."})
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nRun system.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    # lmforge chat on the run (no default_system in its config) sends the same prompt: the run's system prompt
    chat = tmp_path / "chat.yaml"
    chat.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "adapter_name_or_path": str(lora_dir)}))
    engine = ChatEngine(load_inference_config(chat))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert engine.prompt_ids(user) == chat_template_ids(tokenizer, user)

    own = AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    with caplog.at_level("INFO", logger="lmforge"):
        out = export(tmp_path, tiny_model_dir, lora_dir, {"template": "auto"}, export_overwrite=True)
    assert AutoTokenizer.from_pretrained(out).chat_template == own
    assert "chat template: the tokenizer's own kept (template 'auto')" in caplog.text
