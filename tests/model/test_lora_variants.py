"""LoRA+, PiSSA (+ pissa_convert), NEFTune and LLaMA Pro: each does what its LLaMA-Factory key claims.

Oracles: the optimizer's own param groups (LoRA+), the base model's logits and PEFT's plain LoRA loading
(PiSSA), the embedding layer's clean output (NEFTune), requires_grad after apply_freeze (LLaMA Pro).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, TrainerCallback

from lmforge.config import TrainingArguments, load_config
from lmforge.config.adapter_args import AdapterArguments
from lmforge.data.collators import Collator
from lmforge.errors import ConfigError
from lmforge.model.adapters.freeze import apply_freeze
from lmforge.model.adapters.lora import apply_lora
from lmforge.train.callbacks.pissa import CONVERTED_DIR, INITIAL_DIR, PissaConvertCallback
from lmforge.train.trainer import BaseTrainer
from lmforge.train.workflow import loraplus_groups

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11, 64, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


def base_model(model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def lora_model(model_dir, **keys):
    return apply_lora(base_model(model_dir), AdapterArguments.from_keys("lora", lora_rank=4, **keys), is_trainable=True)


@torch.no_grad()
def logits(model):
    model.eval()
    return model(input_ids=IDS).logits


def tiny_dataset(n: int = 16) -> Dataset:
    rows = [{"input_ids": [(7 * i + j) % 300 + 3 for j in range(12)]} for i in range(n)]
    return Dataset.from_list([{**r, "labels": r["input_ids"]} for r in rows])


def make_trainer(model, tmp_path, *, callbacks=(), eval_dataset=None, param_groups=None, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0, logging_steps=1,
    )
    return BaseTrainer(
        model=model, args=TrainingArguments(**{**settings, **overrides}), data_collator=Collator(0),
        train_dataset=tiny_dataset(), eval_dataset=eval_dataset, callbacks=list(callbacks),
        param_groups=param_groups,
    )


# -- LoRA+ -------------------------------------------------------------------------------------------------


def test_loraplus_b_learns_ratio_times_faster_than_a(tiny_model_dir, tmp_path):
    cfg = load_config(None, ["model_name_or_path=m", "output_dir=o", "stage=pt", "dataset=d", "finetuning_type=lora",
                             "learning_rate=2e-3", "loraplus_lr_ratio=16", "weight_decay=0.1", "warmup_steps=2"])
    model = lora_model(tiny_model_dir, additional_target="embed_tokens")
    trainer = make_trainer(model, tmp_path, param_groups=loraplus_groups(cfg), learning_rate=2e-3,
                           weight_decay=0.1, warmup_steps=2, max_steps=4)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    names = {id(p): n for n, p in model.named_parameters()}
    # initial_lr: the group's lr before the schedule scales it (warm-up starts at 0)
    groups = trainer.optimizer.param_groups
    lr_of = {names[id(p)]: (g["initial_lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert set(lr_of) == {n for n, p in model.named_parameters() if p.requires_grad}  # every trainable, once
    a = [n for n in lr_of if "lora_A" in n]
    b = [n for n in lr_of if "lora_B" in n]
    assert a and b
    assert all(lr_of[n] == (2e-3, 0.1) for n in a)
    assert all(lr_of[n] == (2e-3 * 16, 0.1) for n in b)
    embedding_copy = [n for n in lr_of if "embed_tokens" in n]  # modules_to_save: plain lr, no decay (1-D: B's)
    assert embedding_copy and all(lr_of[n] == (2e-3, 0.0) for n in embedding_copy)
    # the schedule scales every group alike: after warm-up steps B's lr is still exactly 16 x A's
    for _ in range(3):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        rates = {g["loraplus"]: g["lr"] for g in trainer.optimizer.param_groups}
        assert rates["lora_b"] == pytest.approx(16 * rates["lora_a"], rel=1e-12) and rates["lora_a"] > 0
    assert loraplus_groups(load_config(None, BASE)) is None


def test_loraplus_embedding_lora_gets_its_own_rate(tiny_model_dir):
    from lmforge.train.loraplus import loraplus_param_groups

    model = lora_model(tiny_model_dir, lora_target="embed_tokens,q_proj")
    groups = loraplus_param_groups(model, 1e-3, 4.0, 5e-6, 0.0)
    by_kind = {g["loraplus"]: g for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    embedding_b = by_kind["embedding"]["params"]
    assert embedding_b and all("lora_embedding_B" in names[id(p)] for p in embedding_b)
    assert by_kind["embedding"]["lr"] == 5e-6 and by_kind["lora_b"]["lr"] == 4e-3 and by_kind["lora_a"]["lr"] == 1e-3


# -- PiSSA ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pissa_iter", [-1, 16])
def test_pissa_starts_where_the_base_was(tiny_model_dir, pissa_iter):
    expected = logits(base_model(tiny_model_dir))
    model = lora_model(tiny_model_dir, pissa_init=True, pissa_iter=pissa_iter)
    assert model.peft_config["default"].init_lora_weights == ("pissa" if pissa_iter == -1 else "pissa_niter_16")
    b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    assert b.abs().max() > 0  # not LoRA's zero init: B A holds the principal part, the base the residual
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=0)


def test_pissa_convert_gives_a_plain_lora_for_the_original_base(tiny_model_dir, tmp_path):
    base_logits = logits(base_model(tiny_model_dir))
    model = lora_model(tiny_model_dir, pissa_init=True, pissa_iter=-1)
    out = tmp_path / "out"
    trainer = make_trainer(model, tmp_path, callbacks=[PissaConvertCallback(str(out))], max_steps=3)
    trainer.train()
    tuned = logits(trainer.model)
    assert (tuned - base_logits).abs().max() > 1e-2  # the steps changed the model
    assert (out / INITIAL_DIR / "adapter_config.json").is_file()

    plain = PeftModel.from_pretrained(base_model(tiny_model_dir), out / CONVERTED_DIR)  # the ORIGINAL base
    config = plain.peft_config["default"]
    assert config.init_lora_weights is True and config.r == 8  # a plain LoRA of twice the rank
    torch.testing.assert_close(logits(plain), tuned, atol=1e-4, rtol=0)
    # the conversion left the trained adapter in place: training state and output are unchanged
    torch.testing.assert_close(logits(trainer.model), tuned, atol=0, rtol=0)


# -- NEFTune -------------------------------------------------------------------------------------------------


class EmbeddingNoiseProbe(TrainerCallback):
    """Records, per embedding call after NEFTune's hook, (module.training, max |output - clean embedding|, L*d)."""

    def __init__(self):
        self.calls: list[tuple[bool, float, int]] = []
        self.handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        embeddings = model.get_input_embeddings()

        def record(module, inputs, output):
            clean = F.embedding(inputs[0], module.weight)
            self.calls.append((module.training, float((output - clean).abs().max()), output.shape[1] * output.shape[2]))

        self.handle = embeddings.register_forward_hook(record)  # after NEFTune's, which train() adds first


def test_neftune_noise_only_while_training(tiny_model_dir, tmp_path):
    alpha = 5.0
    model = lora_model(tiny_model_dir)
    probe = EmbeddingNoiseProbe()
    trainer = make_trainer(model, tmp_path, callbacks=[probe], neftune_noise_alpha=alpha, eval_dataset=tiny_dataset(4),
                           eval_strategy="steps", eval_steps=2, max_steps=3)
    assert trainer._uses_chunked_loss()  # lmforge's own forward path (hidden states + chunked loss) is the one tested
    trainer.train()
    train_calls = [(noise, size) for training, noise, size in probe.calls if training]
    eval_calls = [noise for training, noise, _ in probe.calls if not training]
    assert len(train_calls) == 3 and eval_calls
    for noise, size in train_calls:  # uniform(-m, m) with m = alpha / sqrt(L * d): max |noise| just under m
        bound = alpha / size**0.5
        assert 0.9 * bound < noise <= bound * (1 + 1e-6)
    assert max(eval_calls) == 0.0  # eval mode: no noise

    probe.handle.remove()
    embeddings = trainer.model.get_input_embeddings()
    assert not embeddings._forward_hooks and not hasattr(embeddings, "neftune_noise_alpha")  # removed after train
    trainer.model.train()
    torch.testing.assert_close(embeddings(IDS), F.embedding(IDS, embeddings.weight), atol=0, rtol=0)
    greedy = trainer.model.generate(input_ids=IDS[:1], max_new_tokens=4, do_sample=False)
    assert torch.equal(greedy, trainer.model.generate(input_ids=IDS[:1], max_new_tokens=4, do_sample=False))


# -- LLaMA Pro -----------------------------------------------------------------------------------------------


def expand_blocks(model, num_expand: int):
    """LLaMA Pro's expansion (its scripts/llama_pro.py, reimplemented): after every num_layers / num_expand
    blocks insert a copy whose output projections are zero, so the expanded model computes what the original did."""
    layers = model.model.layers
    split = len(layers) // num_expand
    expanded = []
    for i, layer in enumerate(layers):
        expanded.append(layer)
        if (i + 1) % split == 0:
            new = copy.deepcopy(layer)
            torch.nn.init.zeros_(new.self_attn.o_proj.weight)
            torch.nn.init.zeros_(new.mlp.down_proj.weight)
            expanded.append(new)
    for idx, layer in enumerate(expanded):
        layer.self_attn.layer_idx = idx
    model.model.layers = torch.nn.ModuleList(expanded)
    model.config.num_hidden_layers = len(expanded)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[0]] * len(expanded)
    return model


def test_llama_pro_trains_only_the_expanded_blocks(tiny_model_dir):
    original = logits(base_model(tiny_model_dir))
    model = expand_blocks(base_model(tiny_model_dir), num_expand=2)  # 2 -> 4 layers: new ones at 1 and 3
    torch.testing.assert_close(logits(model), original, atol=1e-5, rtol=0)
    adapter = AdapterArguments.from_keys("freeze", freeze_trainable_layers=2, use_llama_pro=True)
    apply_freeze(model, adapter, is_trainable=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and {n.split(".")[2] for n in trainable} == {"1", "3"}
    assert all(n.startswith(("model.layers.1.", "model.layers.3.")) for n in trainable)
    expected = {n for n, _ in model.named_parameters() if n.startswith(("model.layers.1.", "model.layers.3."))}
    assert trainable == expected

    bad = AdapterArguments.from_keys("freeze", freeze_trainable_layers=3, use_llama_pro=True)
    with pytest.raises(ConfigError, match="must divide its 4 layers"):
        apply_freeze(model, bad, is_trainable=True)


def test_estimate_counts_llama_pro_as_freeze_of_the_expanded_blocks(tiny_model_dir):
    from lmforge.planner.shape import load_shape

    plain = load_shape(tiny_model_dir / "config.json", AdapterArguments.from_keys("freeze", freeze_trainable_layers=1))
    pro = load_shape(tiny_model_dir / "config.json",
                     AdapterArguments.from_keys("freeze", freeze_trainable_layers=1, use_llama_pro=True))
    assert pro.trainable_params == plain.trainable_params > 0


# -- config rules ----------------------------------------------------------------------------------------------

BASE = ["model_name_or_path=m", "output_dir=o", "stage=sft", "dataset=d"]


@pytest.mark.parametrize("overrides, message", [
    (["finetuning_type=full", "loraplus_lr_ratio=16"], "loraplus_lr_ratio.*finetuning_type: lora"),
    (["loraplus_lr_ratio=16", "use_muon=true"], "cannot be combined with use_muon"),
    (["finetuning_type=freeze", "pissa_init=true"], "pissa_init.*finetuning_type: lora"),
    (["pissa_convert=true"], "set pissa_init: true"),
    (["pissa_init=true", "pissa_iter=0"], "pissa_iter"),
    (["finetuning_type=lora", "use_llama_pro=true"], "use_llama_pro.*finetuning_type: freeze"),
    (["stage=dpo", "pissa_init=true"], "reference model"),
])
def test_variant_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, BASE + overrides)


def test_variant_keys_are_accepted_with_their_llamafactory_meaning():
    cfg = load_config(None, BASE + ["loraplus_lr_ratio=16", "loraplus_lr_embedding=1e-5", "pissa_init=true",
                                    "pissa_iter=-1", "pissa_convert=true", "neftune_noise_alpha=5"])
    assert (cfg.lora.loraplus_lr_ratio, cfg.lora.loraplus_lr_embedding) == (16.0, 1e-5)
    assert (cfg.lora.pissa_init, cfg.lora.pissa_iter, cfg.lora.pissa_convert) == (True, -1, True)
    assert cfg.training.neftune_noise_alpha == 5.0
    freeze = load_config(None, BASE + ["finetuning_type=freeze", "use_llama_pro=true", "freeze_trainable_layers=4"])
    assert freeze.freeze.use_llama_pro


def test_train_with_loraplus_pissa_convert_and_neftune_end_to_end(tmp_path, tiny_model_dir, data_dir, caplog):
    """The keys reach the run through `lmforge train`: the converted adapter is written, and loads on the base."""
    import yaml

    from lmforge.cli import main

    keys = {
        "model_name_or_path": str(tiny_model_dir), "dataset_dir": str(data_dir), "dataset": "numbers",
        "template": "qwen", "stage": "sft", "finetuning_type": "lora", "output_dir": str(tmp_path / "out"),
        "data_cache_dir": str(tmp_path / "cache"), "cutoff_len": 32, "per_device_train_batch_size": 4,
        "learning_rate": 1e-3, "max_steps": 2, "save_strategy": "no", "disable_tqdm": True, "seed": 0,
        "loraplus_lr_ratio": 16, "pissa_init": True, "pissa_iter": 4, "pissa_convert": True,
        "neftune_noise_alpha": 5,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(keys))
    with caplog.at_level("INFO", logger="lmforge"):
        assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    assert "LoRA+: B matrices at lr 0.016 (ratio 16)" in caplog.text
    assert "PiSSA init, pissa_niter_4" in caplog.text
    out = tmp_path / "out"
    assert (out / INITIAL_DIR / "adapter_config.json").is_file()
    plain = PeftModel.from_pretrained(base_model(tiny_model_dir), out / CONVERTED_DIR)
    assert plain.peft_config["default"].r == 16 and plain.peft_config["default"].init_lora_weights is True
