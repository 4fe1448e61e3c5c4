"""GaLore, APOLLO, BAdam, Adam-mini and Muon on the tiny model: each does what it claims, measured after one step."""

from __future__ import annotations

import types

import pytest
import torch

from lmforge.config.optimizer_args import OptimizerArguments
from lmforge.errors import ConfigError
from lmforge.train.optimizers import CombinedOptimizer, LayerwiseOptimizer, build_optimizer, muon_split
from lmforge.train.optimizers.measure import measured_state_bytes

ARGS = types.SimpleNamespace(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
                             weight_decay=0.01, optim="adamw_torch")


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def _decay_names(model):
    return [n for n, p in model.named_parameters() if p.ndim >= 2]


def _step(model, optimizer, steps: int = 1):
    for i in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(i))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _built(tiny_model_dir, **keys):
    model = _model(tiny_model_dir)
    optimizer = build_optimizer(model, ARGS, OptimizerArguments(**keys), _decay_names(model))
    return model, optimizer


@pytest.fixture(scope="module")
def adamw_bytes(tiny_model_dir):
    model = _model(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _step(model, optimizer)
    return measured_state_bytes(optimizer)


@pytest.mark.parametrize("keys,package", [
    ({"use_galore": True}, "galore_torch"),
    ({"use_galore": True, "galore_layerwise": True}, "galore_torch"),
    ({"use_apollo": True}, "apollo_torch"),
    ({"use_adam_mini": True}, "adam_mini"),
])
def test_state_is_smaller_than_adamw(tiny_model_dir, adamw_bytes, keys, package):
    pytest.importorskip(package)
    model, optimizer = _built(tiny_model_dir, **keys)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, optimizer)
    measured = measured_state_bytes(optimizer)
    assert 0 < measured < 0.8 * adamw_bytes, (keys, measured, adamw_bytes)
    # and it trained: every parameter moved (layer-wise: stepped during backward)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_layerwise_steps_during_backward(tiny_model_dir):
    pytest.importorskip("galore_torch")
    model, optimizer = _built(tiny_model_dir, use_galore=True, galore_layerwise=True)
    assert isinstance(optimizer, LayerwiseOptimizer)
    weight = model.model.layers[0].mlp.down_proj.weight
    before = weight.detach().clone()
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    assert not torch.equal(before, weight) and weight.grad is None  # updated in backward, gradient freed


def test_badam_updates_one_block_at_a_time(tiny_model_dir):
    pytest.importorskip("badam")
    model, optimizer = _built(tiny_model_dir, use_badam=True, badam_switch_interval=2, badam_switch_mode="ascending")

    def changed_layers():
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _step(model, optimizer)
        moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
        return moved, {int(n.split(".")[2]) for n in moved if ".layers." in n}

    moved, layers = changed_layers()
    assert layers == {0} and all(n.startswith("model.layers.0.") for n in moved)
    # BAdam switches when (steps taken + 1) % interval == 0, so the first block gets interval - 1 steps (as under
    # LLaMA-Factory), every later one the full interval, ascending and wrapping round
    assert [changed_layers()[1] for _ in range(4)] == [{1}, {1}, {0}, {0}]
    assert not model.model.embed_tokens.weight.requires_grad  # embeddings and head stay frozen (LLaMA-Factory's)


def test_badam_start_block_and_never_switching(tiny_model_dir):
    pytest.importorskip("badam")
    model, optimizer = _built(tiny_model_dir, use_badam=True, badam_start_block=1, badam_switch_interval=-1)
    for _ in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _step(model, optimizer)
        assert {n for n, p in model.named_parameters() if not torch.equal(before[n], p)} == {
            n for n, _ in model.named_parameters() if n.startswith("model.layers.1.")}


def test_muon_only_on_hidden_matrices(tiny_model_dir):
    model, optimizer = _built(tiny_model_dir, use_muon=True)
    muon_part, adamw_part = optimizer.parts
    assert isinstance(muon_part, torch.optim.Muon) and isinstance(adamw_part, torch.optim.AdamW)
    muon_ids = {id(p) for g in muon_part.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        hidden = p.ndim == 2 and ".layers." in name
        assert (id(p) in muon_ids) == hidden, name
    assert id(model.get_input_embeddings().weight) not in muon_ids
    _step(model, optimizer)
    # Muon keeps one momentum buffer per matrix, AdamW two moments for the rest
    for p in (q for g in muon_part.param_groups for q in g["params"]):
        assert [k for k, v in optimizer.state[p].items() if torch.is_tensor(v) and v.numel() > 1] == ["momentum_buffer"]


def test_combined_optimizer_checkpoint_round_trip(tiny_model_dir):
    model, optimizer = _built(tiny_model_dir, use_muon=True)
    _step(model, optimizer)
    saved = optimizer.state_dict()
    _, fresh = _built(tiny_model_dir, use_muon=True)
    fresh.load_state_dict(saved)
    assert measured_state_bytes(fresh) == measured_state_bytes(optimizer)
    assert fresh.param_groups[0] is fresh.parts[0].param_groups[0]  # a scheduler still reaches every part
    scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 0.5)
    assert {g["lr"] for p in fresh.parts for g in p.param_groups} == {0.5e-3}
    del scheduler


def test_no_key_builds_nothing(tiny_model_dir):
    model = _model(tiny_model_dir)
    assert build_optimizer(model, ARGS, OptimizerArguments(), _decay_names(model)) is None


def test_missing_library_names_the_extra(tiny_model_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "galore_torch", None)  # import galore_torch -> ImportError
    with pytest.raises(ConfigError, match=r"use_galore: needs galore-torch; pip install -e '\.\[galore\]'"):
        _built(tiny_model_dir, use_galore=True)


def test_unknown_target_names_the_key(tiny_model_dir):
    pytest.importorskip("galore_torch")
    with pytest.raises(ConfigError, match="'nope' names no trainable linear"):
        _built(tiny_model_dir, use_galore=True, galore_target="nope")


def test_muon_split_leaves_vectors_to_adamw(tiny_model_dir):
    model = _model(tiny_model_dir)
    muon, adamw = muon_split(model)
    assert all(p.ndim == 2 for p in muon) and any(p.ndim == 1 for p in adamw)


# -- through `lmforge train` -----------------------------------------------------------------------------------

def _train(tmp_path, tiny_model_dir, data_dir, **extra):
    import yaml

    from lmforge.cli import main

    keys = {"model_name_or_path": str(tiny_model_dir), "dataset_dir": str(data_dir), "dataset": "numbers",
            "template": "qwen", "stage": "sft", "finetuning_type": "full", "cutoff_len": 32,
            "output_dir": str(tmp_path / "out"), "data_cache_dir": str(tmp_path / "cache"), "max_steps": 3,
            "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no",
            "disable_tqdm": True, "report_to": "none", **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(keys))
    return main(["train", str(path)])


@pytest.mark.parametrize("extra,package", [
    ({"use_muon": True}, None),
    ({"use_badam": True, "badam_switch_interval": 2}, "badam"),
    # ratio mode: sparse gradients, clipped by lmforge's sparse-aware norm (max_grad_norm 1.0, the default)
    ({"use_badam": True, "badam_mode": "ratio", "badam_update_ratio": 0.1}, "badam"),
    ({"use_galore": True, "galore_layerwise": True, "galore_rank": 8}, "galore_torch"),
    ({"use_apollo": True, "apollo_rank": 8}, "apollo_torch"),
    ({"use_adam_mini": True}, "adam_mini"),
    ({"optim": "adafactor"}, None),  # an `optim` transformers knows, no use_* key
    ({"optim": "sgd"}, None),
], ids=["muon", "badam", "badam-ratio", "galore-layerwise", "apollo", "adam-mini", "adafactor", "sgd"])
def test_trains_through_the_cli(tmp_path, tiny_model_dir, data_dir, extra, package):
    import json

    if package:
        pytest.importorskip(package)
    assert _train(tmp_path, tiny_model_dir, data_dir, **extra) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(l == l for l in losses)


@pytest.mark.parametrize("extra,message", [
    ({"use_galore": True, "use_apollo": True}, "'use_galore' and 'use_apollo' each replace the optimizer"),
    ({"use_badam": True, "finetuning_type": "lora"}, "'use_badam' trains full weights"),
    ({"use_galore": True, "galore_layerwise": True, "gradient_accumulation_steps": 2}, "set gradient_accumulation_steps: 1"),
    ({"use_apollo": True, "optim": "adafactor"}, "use_apollo: optim 'adafactor' has no APOLLO version"),
    ({"use_badam": True, "badam_switch_interval": 0}, "badam_switch_interval: 0"),
    ({"use_galore": True, "galore_rank": 0}, "galore_rank: 0 must be at least 1"),
    ({"galore_proj_type": "diagonal"}, "galore_proj_type: 'diagonal' is not one of"),
])
def test_config_errors_name_the_key(tmp_path, tiny_model_dir, data_dir, capsys, extra, message):
    assert _train(tmp_path, tiny_model_dir, data_dir, **extra) == 2
    assert message in capsys.readouterr().err


def test_sparse_aware_clip_equals_torch_on_the_dense_gradients():
    from lmforge.train.optimization import clip_sparse_aware

    torch.manual_seed(0)
    dense = [torch.nn.Parameter(torch.zeros(4, 3)) for _ in range(2)]
    sparse = [torch.nn.Parameter(torch.zeros(4, 3)) for _ in range(2)]
    for d, s in zip(dense, sparse):
        g = torch.randn(4, 3) * (torch.rand(4, 3) < 0.3)
        d.grad, s.grad = g.clone(), g.to_sparse()
    want = torch.nn.utils.clip_grad_norm_(dense, 0.5)
    got = clip_sparse_aware(sparse, 0.5)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    for d, s in zip(dense, sparse):
        assert torch.allclose(s.grad.to_dense(), d.grad, atol=1e-6)
