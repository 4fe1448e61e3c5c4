"""`lmforge export`: the merged model computes what base + adapter computes, and plain transformers loads it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from lmforge.cli import main


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter changes the logits (a fresh LoRA does not).
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    (out / "lmforge_run.json").write_text(json.dumps({"template": "qwen"}))
    return out


def run_export(tmp_path, **keys) -> int:
    cfg = tmp_path / "export.yaml"
    cfg.write_text(yaml.safe_dump(keys))
    return main(["export", str(cfg)])


def test_merged_export_equals_base_plus_adapter(tmp_path, tiny_model_dir, adapter_dir):
    out = tmp_path / "merged"
    assert run_export(tmp_path, model_name_or_path=str(tiny_model_dir), adapter_name_or_path=str(adapter_dir),
                      export_dir=str(out), export_size=0.0001, export_dtype="fp32") == 0
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()  # 100 KB shards
    assert not list(out.glob("*.bin")) and not (out / "adapter_config.json").exists()
    assert json.loads((out / "lmforge_run.json").read_text())["template"] == "qwen"

    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no lmforge
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = torch.randint(0, merged.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        actual = merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the adapter matters
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0), (actual - expected).abs().max()
    assert merged.generation_config.eos_token_id is not None


def test_export_dtype_and_refusal_to_overwrite(tmp_path, tiny_model_dir, adapter_dir, capsys):
    out = tmp_path / "merged"
    keys = dict(model_name_or_path=str(tiny_model_dir), adapter_name_or_path=str(adapter_dir), export_dir=str(out),
                export_dtype="bf16")
    assert run_export(tmp_path, **keys) == 0
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    capsys.readouterr()
    assert run_export(tmp_path, **keys) == 2  # a user error: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: export_dir") and "export_overwrite: true" in err and "Traceback" not in err
    assert run_export(tmp_path, **keys, export_overwrite=True) == 0
