"""Pretraining optimisation: which parameters decay, schedule shapes, warm-up clipping, memmap config rules."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.config import TrainingArguments, load_config
from lmforge.data.collators import Collator
from lmforge.errors import ConfigError
from lmforge.train.trainer import BaseTrainer


def make_trainer(model_dir, tmp_path, **overrides) -> BaseTrainer:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=20, learning_rate=1.0,
        weight_decay=0.1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
    )
    args = TrainingArguments(**{**settings, **overrides})
    return BaseTrainer(model=model, args=args, data_collator=Collator(0))


def decayed(trainer) -> set[str]:
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return {names[id(p)] for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}


def test_weight_decay_only_on_matrix_weights(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path)
    names = dict(trainer.model.named_parameters())
    got = decayed(trainer)
    expected = {n for n, p in names.items() if p.ndim == 2 and "embed_tokens" not in n}
    assert got == expected and got  # q/k/v/o and mlp projections
    assert not any("norm" in n or n.endswith("bias") or "embed" in n for n in got)
    with_embeddings = decayed(make_trainer(tiny_model_dir, tmp_path, weight_decay_embeddings=True))
    assert with_embeddings == expected | {"model.embed_tokens.weight"}


def learning_rates(trainer, steps: int) -> list[float]:
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return lrs


def test_warmup_stable_decay_spends_decay_ratio_in_the_final_decay(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, lr_scheduler_type="warmup_stable_decay", warmup_steps=4,
                           decay_ratio=0.25)
    lrs = learning_rates(trainer, 20)
    assert lrs[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])  # linear warm-up
    assert lrs[4:15] == pytest.approx([1.0] * 11)  # stable
    assert all(a > b for a, b in zip(lrs[15:], lrs[16:])) and lrs[-1] < 0.2  # 5 decay steps = 25% of 20


def test_constant_with_warmup_and_cosine(tiny_model_dir, tmp_path):
    constant = learning_rates(make_trainer(tiny_model_dir, tmp_path, lr_scheduler_type="constant", warmup_steps=2), 6)
    assert constant == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    cosine = learning_rates(make_trainer(tiny_model_dir, tmp_path, lr_scheduler_type="cosine", warmup_steps=2), 10)
    assert cosine[2] == pytest.approx(1.0) and cosine[-1] < 0.05


def test_grad_clip_is_looser_during_warmup(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, max_grad_norm=0.01, warmup_max_grad_norm=1e6, warmup_steps=3)
    trainer.state.max_steps = 20
    model = trainer.model
    ids = torch.arange(24).reshape(2, 12)

    def clipped_norm_at(step: int) -> tuple[float, float]:
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        trainer.state.global_step = step
        before = float(trainer._clip_grad_norm(model))
        after = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
        return before, after

    before, after = clipped_norm_at(1)  # warm-up: limit 1e6, nothing clipped
    assert after == pytest.approx(before, rel=1e-5) and before > 0.01
    before, after = clipped_norm_at(3)  # after warm-up: limit 0.01
    assert after == pytest.approx(0.01, rel=1e-3)
    assert trainer.args.max_grad_norm == 0.01  # the configured value is left as it was
    assert trainer._clipped_steps == 1 and trainer._clip_steps == 2


def test_schedule_and_clip_never_write_into_args(tiny_model_dir, tmp_path, monkeypatch):
    """The decay steps and the warm-up clip are computed values; the user's arguments stay as validated."""
    trainer = make_trainer(tiny_model_dir, tmp_path, lr_scheduler_type="warmup_stable_decay", warmup_steps=4,
                           decay_ratio=0.25, max_grad_norm=0.01, warmup_max_grad_norm=1e6)
    trainer.state.max_steps = 20
    before = trainer.args.to_json_string()

    def refuse(args, name, value):
        raise AssertionError(f"wrote args.{name} = {value!r}")

    monkeypatch.setattr(TrainingArguments, "__setattr__", refuse)
    assert trainer.scheduler_kwargs(20) == {"num_decay_steps": 5}
    lrs = learning_rates(trainer, 20)
    assert lrs[15] == pytest.approx(1.0) and lrs[16] < 1.0  # 5 decay steps, from computed kwargs
    ids = torch.arange(24).reshape(2, 12)
    for step in (1, 5):  # warm-up limit, then max_grad_norm
        trainer.model.zero_grad()
        trainer.model(input_ids=ids, labels=ids).loss.backward()
        trainer.state.global_step = step
        assert trainer.grad_clip_limit() == (1e6 if step < 4 else 0.01)
        trainer._clip_grad_norm(trainer.model)
    monkeypatch.undo()
    assert trainer.args.to_json_string() == before and trainer.args.lr_scheduler_kwargs in (None, {})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stage=sft", "memmap_path=s", "template=qwen"], "for stage pt"),
        (["memmap_path=s", "dataset=d"], "either 'dataset' or 'memmap_path'"),
        (["dataset=d", "eval_memmap_path=s"], "needs 'memmap_path'"),
        (["memmap_path=s", "eval_memmap_path=s", "val_size=0.1"], "either 'eval_memmap_path'"),
        (["dataset=d", "isolate_documents=true"], "set 'memmap_path'"),
        (["memmap_path=s", "lr_scheduler_type=warmup_stable_decay", "decay_ratio=1.5"], "decay_ratio"),
    ],
)
def test_memmap_and_schedule_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model_name_or_path=m", "output_dir=o", "stage=pt", *overrides])
