"""Every decoder family people fine-tune, as a tiny random model saved and reloaded through `from_pretrained`
(the `tiny-<family>` presets), through each lmforge path: LoRA sft with `lora_target: all`, isolated packing
(exact to 1e-5 against padded, unpacked samples), selective checkpointing (same losses and gradients as
none), one dpo step, export + reload, chat and `estimate`.

Where a family cannot take a path as asked, lmforge takes an exact one instead or says why; the tests at the
end pin each such case: Gemma 2's softcapping (eager instead of sdpa_varlen; `sdpa` refused), sliding windows
under sdpa_varlen (applied inside each packed sample), and the MLP names PEFT maps onto DeepSeek-V3's experts.
"""

from __future__ import annotations

import json
import logging
import math
import random

import pytest
import torch
import torch.nn.functional as F
import yaml
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lmforge.cli import main
from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.config.model_args import ModelArguments
from lmforge.data.collators import Collator
from lmforge.data.packing import best_fit_decreasing, pack_examples
from lmforge.errors import ConfigError
from lmforge.model.from_config import create_model
from lmforge.model.loader import count_parameters, load_model
from lmforge.types import IGNORE_INDEX

pytestmark = pytest.mark.slow

FAMILIES = ["llama", "qwen2", "qwen3", "qwen3-moe", "mistral", "mixtral", "gemma2", "gemma3", "phi3", "olmo2",
            "granite", "gpt-neox", "smollm3", "deepseek-v3"]

ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
MLP = {"gate_proj", "up_proj", "down_proj"}
EXPERTS = {"experts.gate_up_proj", "experts.down_proj"}
LORA_ALL = {
    # family -> (module names, expert parameter names) that `lora_target: all` adapts
    "phi3": ({"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}, set()),
    "gpt-neox": ({"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}, set()),
    "qwen3-moe": (ATTENTION, EXPERTS),
    "mixtral": (ATTENTION, EXPERTS),
    # PEFT 0.21 turns the MLP names into the experts' parameters (test_deepseek_dense_mlp_names_are_reported)
    "deepseek-v3": ({"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"},
                    EXPERTS | {"gate_up_proj", "down_proj"}),
}
LENGTHS = [5, 9, 13, 17, 22, 26, 31, 40]
"""Packed sample lengths: several share each 64-token row; most exceed the sliding windows (8) of the presets."""


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, model directory) of one family, created once per module."""
    name = request.param
    return name, create_model(f"tiny-{name}", tmp_path_factory.mktemp("arch") / name, seed=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch-data")
    sft = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(16)]
    pairs = [{"instruction": f"Is thing {i} fine?", "input": "", "chosen": "Yes, it is fine.",
              "rejected": "No. I refuse."} for i in range(8)]
    (root / "sft.json").write_text(json.dumps(sft))
    (root / "pairs.json").write_text(json.dumps(pairs))
    (root / "dataset_info.json").write_text(json.dumps({
        "sft": {"file_name": "sft.json"},
        "pairs": {"file_name": "pairs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    }))
    return root


def template_of(name: str) -> str:
    return "llama3" if name == "llama" else "qwen"  # every other preset has the ChatML tokenizer


def train(tmp_path, model_dir, data_dir, name, **keys) -> list[dict]:
    cfg = {"model_name_or_path": str(model_dir), "dataset_dir": str(data_dir), "template": template_of(name),
           "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"), "cutoff_len": 64,
           "per_device_train_batch_size": 4, "learning_rate": 1.0e-2, "logging_steps": 1, "save_strategy": "no",
           "disable_tqdm": True, "seed": 0, "report_to": "none",
           "peak_tflops": 1.0,  # no 0.75 s matmul calibration per run for an MFU nobody reads here
           **keys}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    return [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]


# --- packing and checkpointing: plain forward/backward passes, compared tensor by tensor ----------------------

def samples(vocab: int) -> list[dict]:
    rng = random.Random(0)
    out = []
    for n in LENGTHS:
        ids = [rng.randrange(3, vocab - 3) for _ in range(n)]
        prompt = rng.randint(1, n // 2)
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def sample_losses(logits, labels, segments) -> torch.Tensor:
    """Token-summed loss of each sample (segment id), after the causal shift."""
    token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="none")
    seg = segments[:, 1:].reshape(-1)
    keep = labels[:, 1:].reshape(-1) != IGNORE_INDEX
    return torch.stack([token[keep & (seg == s)].sum() for s in range(len(LENGTHS))])


def padded_losses(model, data):
    batch = Collator(pad_token_id=0)(data)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return sample_losses(logits, batch["labels"], torch.arange(len(data)).unsqueeze(1).expand_as(batch["labels"]))


def packed_losses(model, data):
    rows, _ = pack_examples(Dataset.from_list(data), capacity=64)
    batch = Collator(pad_token_id=0)(rows.to_list())
    assert len(rows) < len(data) and "attention_mask" not in batch  # samples really share rows, isolated
    segments = torch.full_like(batch["labels"], -1)  # packed position -> its sample (rows keep index order)
    for r, members in enumerate(best_fit_decreasing(LENGTHS, 64)):
        start = 0
        for i in sorted(members):
            segments[r, start : start + LENGTHS[i]] = i
            start += LENGTHS[i]
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return sample_losses(logits, batch["labels"], segments)


def loss_and_grads(model, losses):
    model.zero_grad()
    losses.sum().backward()
    return losses.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def assert_close(actual, expected, what):
    (loss_a, grad_a), (loss_e, grad_e) = actual, expected
    torch.testing.assert_close(loss_a, loss_e, rtol=1e-5, atol=0, msg=f"{what}: losses differ")
    assert (grad_a - grad_e).abs().max() <= 1e-5 * grad_e.abs().max(), f"{what}: gradients differ"


def test_packing_and_selective_checkpointing_are_exact(family):
    """Full fine-tuning under lmforge's default attention: an isolated packed batch gives the losses and gradients
    of the padded, unpacked samples, and selective checkpointing changes neither."""
    name, model_dir = family
    model_args = ModelArguments(model_name_or_path=str(model_dir))
    full = AdapterArguments(finetuning_type="full")
    plain = load_model(model_args, full, is_trainable=True).train()
    data = samples(plain.config.vocab_size)
    padded = loss_and_grads(plain, padded_losses(plain, data))
    assert_close(loss_and_grads(plain, packed_losses(plain, data)), padded, f"{name} packed")

    checkpointed = load_model(model_args, full, is_trainable=True, gradient_checkpointing=True,
                              selective_checkpointing=True).train()
    assert checkpointed.is_gradient_checkpointing
    assert_close(loss_and_grads(checkpointed, packed_losses(checkpointed, data)), padded, f"{name} selective")


# --- the stages, export, chat and estimate: real runs through main(argv) and the public functions -------------

def test_lora_sft_export_chat(family, data_dir, tmp_path):
    """LoRA sft (packed) adapts the family's attention and MLP projections (its experts for MoE) and nothing
    else, every adapter matrix learns; the merged export computes base + adapter; chat answers from it."""
    name, model_dir = family
    rows = train(tmp_path, model_dir, data_dir, name, stage="sft", dataset="sft", finetuning_type="lora",
                 lora_target="all", lora_rank=4, packing=True, max_steps=1)
    (loss,) = [r["loss"] for r in rows if "loss" in r]
    assert math.isfinite(loss)

    adapter = tmp_path / "out"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    modules, parameters = LORA_ALL.get(name, (ATTENTION | MLP, set()))
    assert set(saved["target_modules"]) == modules
    assert set(saved.get("target_parameters") or ()) == parameters
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(k.split(".")[-3] in modules | {"experts", "base_layer"} for k in lora_b)
    assert not [k for k, v in lora_b.items() if not v.abs().max() > 0]  # B starts at 0: each got a gradient

    from peft import PeftModel

    from lmforge.config import load_inference_config
    from lmforge.export.merge import export_model
    from lmforge.inference.engine import ChatEngine

    cfg = tmp_path / "export.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(model_dir), "adapter_name_or_path": str(adapter),
                                   "export_dir": str(tmp_path / "merged"), "template": template_of(name)}))
    merged_dir = export_model(load_inference_config(str(cfg)))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter)
    ids = torch.tensor([list(range(5, 37))])
    with torch.no_grad():
        expected, base = tuned(input_ids=ids).logits, tuned.get_base_model()(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-4)
    with tuned.disable_adapter(), torch.no_grad():
        base = tuned(input_ids=ids).logits
    assert (expected - base).abs().max() > 1e-3  # the adapter trained, so the comparison means something

    engine = ChatEngine(load_inference_config(str(cfg)))  # base + adapter, merged at load
    assert isinstance(engine.reply([{"role": "user", "content": "Hi"}], max_new_tokens=4, do_sample=False), str)


def test_dpo_step_starts_from_its_reference(family, data_dir, tmp_path):
    """One LoRA dpo step: at step 0 the policy is its reference, so rewards are 0 and the loss is ln 2."""
    name, model_dir = family
    (row,) = [r for r in train(tmp_path, model_dir, data_dir, name, stage="dpo", dataset="pairs",
                               finetuning_type="lora", lora_rank=4, pref_beta=0.1, max_steps=1) if "loss" in r]
    assert row["rewards/chosen"] == 0 and row["rewards/rejected"] == 0
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert math.isfinite(row["logps/chosen"]) and math.isfinite(row["logps/rejected"])


def test_estimate_counts_the_model(family, capsys):
    """`lmforge estimate` runs for the family; its parameter counts equal the loaded model's, full and LoRA."""
    from lmforge.planner.shape import load_shape

    name, model_dir = family
    model_args = ModelArguments(model_name_or_path=str(model_dir))
    full = load_model(model_args, AdapterArguments(finetuning_type="full"), is_trainable=False)
    assert load_shape(model_dir).total_params == count_parameters(full)[1]
    lora_args = AdapterArguments(finetuning_type="lora", lora=LoraArguments(lora_target="all", lora_rank=4))
    lora = load_model(model_args, lora_args, is_trainable=True)
    shape = load_shape(model_dir, lora_args)
    assert (shape.trainable_params, shape.total_params) == count_parameters(lora)
    assert main(["estimate", str(model_dir), "--seq-len", "64", "--finetuning-type", "lora"]) == 0
    assert "memory" in capsys.readouterr().out.lower()


# --- the families that cannot take a path as asked ------------------------------------------------------------

def gemma2_dir(tmp_path):
    return create_model("tiny-gemma2", tmp_path / "gemma2", seed=0)


def test_gemma2_softcapping_falls_back_to_eager(tmp_path, caplog):
    """sdpa_varlen (the default) cannot apply attention logit softcapping: Gemma 2 loads with eager, saying so,
    and eager is what the unmodified transformers model computes."""
    directory = gemma2_dir(tmp_path)
    with caplog.at_level(logging.INFO, logger="lmforge"):
        model = load_model(ModelArguments(model_name_or_path=str(directory)), AdapterArguments("full"),
                           is_trainable=False)
    assert model.config._attn_implementation == "eager"
    assert "gemma2 uses attention logit softcapping" in caplog.text and "falls back to eager" in caplog.text
    reference = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    ids = torch.tensor([list(range(5, 45))])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=0, atol=0)


def test_gemma2_refuses_sdpa_by_name(tmp_path):
    directory = gemma2_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"gemma2 uses attention logit softcapping .* attn_implementation 'sdpa' "
                                          r"cannot apply; set attn_implementation: eager"):
        load_model(ModelArguments(model_name_or_path=str(directory), attn_implementation="sdpa"),
                   AdapterArguments("full"), is_trainable=False)


@pytest.mark.parametrize("preset", ["tiny-mistral", "tiny-gemma3"])
def test_sliding_window_applies_inside_packed_samples(tmp_path, preset):
    """sdpa_varlen applies the window per packed sample: it equals eager on the padded samples, and the window
    matters (without it the losses differ), so a packed run cannot silently attend past it."""
    directory = create_model(preset, tmp_path / preset, seed=0)
    varlen = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="sdpa_varlen")
    eager = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    data = samples(varlen.config.vocab_size)
    with torch.no_grad():
        expected = padded_losses(eager, data)
        torch.testing.assert_close(packed_losses(varlen, data), expected, rtol=1e-5, atol=0)
        eager.config.sliding_window = 4096
        for layer in eager.model.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                layer.self_attn.sliding_window = 4096
        unwindowed = padded_losses(eager, data)  # the same masks as before, built without the window
    assert ((unwindowed - expected).abs() / expected).max() > 1e-3


def test_deepseek_dense_mlp_names_are_reported(tmp_path, caplog):
    """PEFT maps gate_proj/up_proj/down_proj onto DeepSeek-V3's fused experts and leaves its dense MLP and shared
    experts frozen; lmforge says which modules (consistent results, but not what `all` names)."""
    directory = create_model("tiny-deepseek-v3", tmp_path / "dsv3", seed=0)
    with caplog.at_level(logging.WARNING, logger="lmforge"):
        model = load_model(ModelArguments(model_name_or_path=str(directory)),
                           AdapterArguments("lora", lora=LoraArguments(lora_target="all")), is_trainable=True)
    assert "deepseek_v3: PEFT left 6 module(s) named by lora_target without an adapter" in caplog.text
    assert "model.layers.0.mlp.down_proj" in caplog.text
    assert hasattr(model.get_base_model().model.layers[1].mlp.experts, "lora_A")
