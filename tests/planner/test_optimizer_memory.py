"""`lmforge estimate` knows the use_* optimizers: its state bytes against the states measured after one step."""

from __future__ import annotations

import types

import pytest
import torch

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.optimizer_args import OptimizerArguments
from lmforge.planner.memory import Setup, estimate_memory, optimizer_state_bytes
from lmforge.train.optimizers import build_optimizer
from lmforge.train.optimizers.measure import measured_state_bytes

ARGS = types.SimpleNamespace(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
                             weight_decay=0.0, optim="adamw_torch")


def _measured(tiny_model_dir, keys: dict) -> int:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    decay = [n for n, p in model.named_parameters() if p.ndim >= 2]
    optimizer = (build_optimizer(model, ARGS, OptimizerArguments(**keys), decay) if keys
                 else torch.optim.AdamW(model.parameters(), lr=1e-3))
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return measured_state_bytes(optimizer)


@pytest.fixture(scope="module")
def shape(tiny_model_dir):
    from lmforge.planner.shape import load_shape

    return load_shape(tiny_model_dir, AdapterArguments(finetuning_type="full"))


@pytest.mark.parametrize("name,keys,package", [
    ("adamw_torch", {}, None),
    ("galore", {"use_galore": True}, "galore_torch"),
    ("galore", {"use_galore": True, "galore_rank": 8}, "galore_torch"),
    ("apollo", {"use_apollo": True}, "apollo_torch"),
    ("adam_mini", {"use_adam_mini": True}, "adam_mini"),
    ("badam", {"use_badam": True}, "badam"),
    ("muon", {"use_muon": True}, None),
])
def test_estimate_matches_measured_states(tiny_model_dir, shape, name, keys, package):
    if package:
        pytest.importorskip(package)
    rank = keys.get("galore_rank", 16)
    estimated = optimizer_state_bytes(shape, name, rank)
    measured = _measured(tiny_model_dir, keys)
    assert estimated == pytest.approx(measured, rel=0.02), (name, estimated, measured)


def test_the_plan_uses_them_and_refuses_deepspeed(shape):
    from lmforge.errors import ConfigError

    adamw = estimate_memory(shape, Setup(optimizer="adamw_torch", seq_len=32)).optimizer
    for name in ("galore", "apollo", "adam_mini", "badam", "muon"):
        assert estimate_memory(shape, Setup(optimizer=name, seq_len=32)).optimizer < adamw
    with pytest.raises(ConfigError, match="galore does not run under DeepSpeed"):
        Setup(optimizer="galore", zero=2)


def test_cli_takes_the_optimizer_and_rank(tiny_model_dir, capsys):
    from lmforge.cli import main

    assert main(["estimate", str(tiny_model_dir), "--optimizer", "galore", "--optimizer-rank", "8", "--seq-len", "32"]) == 0
    assert "galore" in capsys.readouterr().out
