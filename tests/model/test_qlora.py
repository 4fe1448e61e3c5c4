"""QLoRA on this CPU: bitsandbytes 0.50's CPU backend runs 4-bit (nf4 / fp4, double quantization) and 8-bit
layers forward and backward. LoRA trains on the quantized base (the loss falls, the base stays frozen in 4 bits),
an export with quantization_bit merges into the dequantized base (its logits equal the QLoRA model's), one without
merges into the full-precision base (LLaMA-Factory's way: logits equal base + adapter), and the config rules
name their keys."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lmforge.cli import main

bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (in the test extra)")


def write_config(tmp_path, model_dir, data_dir, **extra) -> str:
    cfg = dict(stage="sft", model_name_or_path=str(model_dir), dataset="numbers", dataset_dir=str(data_dir),
               template="qwen", cutoff_len=64, finetuning_type="lora", lora_rank=8, lora_target="all",
               quantization_bit=4, quantization_type="nf4", double_quantization=True,
               per_device_train_batch_size=8, max_steps=8, learning_rate=1e-2, logging_steps=1, save_strategy="no",
               seed=0, dataloader_num_workers=0, output_dir=str(tmp_path / "qlora"), report_to="none",
               data_cache_dir=str(tmp_path / "cache"))
    cfg.update(extra)
    path = tmp_path / f"cfg_{len(list(tmp_path.glob('cfg_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def losses(output_dir) -> list[float]:
    rows = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def qlora_logits(model, ids) -> torch.Tensor:
    # train mode on purpose (no dropout anywhere, so the same function): in eval mode bitsandbytes' CPU inference
    # kernel repacks the 4-bit weights in blocks of 32 rows, which the tiny model's 16-wide key/value projections
    # do not fill; in train mode it dequantizes and multiplies, as training did
    model.train()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A 4-bit nf4 (double quantization) QLoRA sft run of 8 steps on the tiny model: (its dir, its data dir)."""
    tmp = tmp_path_factory.mktemp("qlora")
    data = tmp / "data"
    data.mkdir()
    rows = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(32)]
    (data / "numbers.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"numbers": {"file_name": "numbers.json"}}))
    assert main(["train", write_config(tmp, tiny_model_dir, data)]) == 0
    return tmp, data


def test_lora_trains_on_a_4bit_base(trained, tiny_model_dir):
    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.config.model_args import ModelArguments
    from lmforge.config.quantization_args import QuantizationArguments
    from lmforge.model.loader import load_model

    tmp, _ = trained
    curve = losses(tmp / "qlora")
    assert len(curve) == 8 and curve[-1] < 0.92 * curve[0]  # measured 7.009 -> 6.136
    adapter = AdapterArguments.from_keys("lora", lora_rank=8, lora_target="all")
    adapter = AdapterArguments(adapter.finetuning_type, adapter.lora, adapter.freeze,
                               QuantizationArguments(quantization_bit=4))
    model = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), adapter, is_trainable=True)
    base_layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(base_layers) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down), each under a LoRA wrapper
    assert all(not p.requires_grad for m in base_layers for p in m.parameters())
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)


def test_an_8bit_base_trains_too(tmp_path, tiny_model_dir, trained):
    _, data = trained
    assert main(["train", write_config(tmp_path, tiny_model_dir, data, quantization_bit=8, max_steps=3,
                                       output_dir=str(tmp_path / "q8"))]) == 0
    curve = losses(tmp_path / "q8")
    assert len(curve) == 3 and all(torch.isfinite(torch.tensor(curve)))


def test_export_merges_into_the_dequantized_base_or_the_original(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tmp, _ = trained
    ids = torch.tensor([[5, 17, 99, 230, 41, 7, 300, 12]])
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    qbase = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, device_map={"": "cpu"},
                                                 dtype=torch.float32)
    qlora = qlora_logits(PeftModel.from_pretrained(qbase, tmp / "qlora"), ids)  # what training computed
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora_on_full = logits(PeftModel.from_pretrained(full, tmp / "qlora").eval(), ids)

    for name, extra in (("dequantized", {"quantization_bit": 4}), ("original", {})):
        cfg = {"model_name_or_path": str(tiny_model_dir), "adapter_name_or_path": str(tmp / "qlora"),
               "template": "qwen", "finetuning_type": "lora", "export_dir": str(tmp / f"export_{name}"),
               "export_dtype": "fp32", **extra}
        (tmp / f"export_{name}.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["export", str(tmp / f"export_{name}.yaml")]) == 0
    dequantized = logits(AutoModelForCausalLM.from_pretrained(tmp / "export_dequantized", dtype=torch.float32), ids)
    original = logits(AutoModelForCausalLM.from_pretrained(tmp / "export_original", dtype=torch.float32), ids)
    assert (dequantized - qlora).abs().max() < 1e-4  # the QLoRA model, merged: nothing lost
    assert (original - lora_on_full).abs().max() < 1e-4  # LLaMA-Factory's merge into the full-precision weights
    assert (original - qlora).abs().max() > 1e-3  # ... which the adapter never saw: the 4-bit error shows


@pytest.mark.parametrize("extra, message", [
    ({"finetuning_type": "full"}, "quantization_bit: a quantized base trains only through an adapter; set "
                                  "finetuning_type: lora (it is 'full')"),
    ({"quantization_method": "hqq"}, "quantization_method: 'hqq' is not supported yet; use bnb"),
    ({"quantization_bit": 3}, "quantization_bit"),
    ({"quantization_device_map": "auto"}, "quantization_device_map: auto spreads a model for inference"),
    ({"quantization_type": "nf3"}, "quantization_type"),
])
def test_bad_quantization_keys_are_one_line_errors(tmp_path, tiny_model_dir, trained, capsys, extra, message):
    _, data = trained
    assert main(["train", write_config(tmp_path, tiny_model_dir, data, **extra)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmforge: error:") and message in err[0]


@pytest.mark.parametrize("bits, double", [(4, True), (4, False), (8, True)])
def test_the_planner_counts_the_quantized_base_as_bitsandbytes_stores_it(tmp_path, bits, double):
    """The planner's weight bytes for a QLoRA setup equal the bytes bitsandbytes holds for that model: packed
    weights, block scales (and their nested scales), the unquantized embeddings, norms and head, and the fp32
    LoRA matrices. Layer widths are multiples of 64 (a block) as in real models."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Qwen2Config

    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.config.lora_args import LoraArguments
    from lmforge.model.adapters.lora import apply_lora
    from lmforge.planner.memory import Setup, estimate_memory
    from lmforge.planner.shape import load_shape

    config = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "m")
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double,
                                bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
             if bits == 4 else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", quantization_config=quant, device_map={"": "cpu"},
                                                 dtype=torch.float32)
    adapter = AdapterArguments("lora", LoraArguments(lora_rank=8, lora_target="all"))
    model = apply_lora(model, adapter, is_trainable=True)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for weight in {id(m.weight): m.weight for m in model.modules() if isinstance(m, (bnb.nn.Linear4bit,
                                                                                     bnb.nn.Linear8bitLt))}.values():
        state = getattr(weight, "quant_state", None)
        if state is not None:  # 4-bit block scales live beside the weight, not as parameters
            held += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                held += state.state2.absmax.numel() * state.state2.absmax.element_size() + 4  # + the fp32 offset
        scales = getattr(weight, "SCB", None)
        if scales is not None:  # 8-bit: one fp32 scale per output row
            held += scales.numel() * scales.element_size()
    shape = load_shape(str(tmp_path / "m"), adapter)
    plan = estimate_memory(shape, Setup(dtype="fp32", device_type="cpu", quantization_bit=bits,
                                        double_quantization=double))
    assert plan.weights == pytest.approx(held, rel=0.002)
    full = estimate_memory(shape, Setup(dtype="fp32", device_type="cpu"))
    assert full.weights > 1.5 * plan.weights
