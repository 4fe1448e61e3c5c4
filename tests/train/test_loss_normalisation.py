"""Loss normalisation under gradient accumulation, packing and per-sample weighting, through BaseTrainer.

One SGD step with lr 1 and no clipping moves every parameter by exactly -grad, so comparing the weights
after one step compares the gradients of two ways of batching the same 4 samples.
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from lmforge.config import TrainingArguments
from lmforge.data.collators import Collator
from lmforge.data.packing import pack_examples
from lmforge.train.trainer import BaseTrainer
from lmforge.types import IGNORE_INDEX

LENGTHS = [6, 11, 19, 30]


def samples(vocab: int) -> list[dict]:
    rng = random.Random(0)
    out = []
    for n in LENGTHS:
        ids = [rng.randrange(3, vocab - 3) for _ in range(n)]
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 2 + ids[2:]})
    return out


def one_step_delta(model_dir, tmp_path, data, *, bs, accum, weighting="token", chunk=1024, isolate=True):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(
        output_dir=str(tmp_path / f"o{bs}{accum}{weighting}{chunk}"), per_device_train_batch_size=bs,
        gradient_accumulation_steps=accum, max_steps=1, learning_rate=1.0, optim="sgd", weight_decay=0.0,
        max_grad_norm=0.0, lr_scheduler_type="constant", train_sampling_strategy="sequential",
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
    )
    trainer = BaseTrainer(model=model, args=args, train_dataset=data, data_collator=Collator(0, isolate_packed=isolate),
                          loss_chunk_size=chunk, loss_weighting=weighting)
    trainer.train()
    return torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, model.parameters())])


def assert_same(a, b, rtol=1e-5):
    assert (a - b).abs().max() <= rtol * a.abs().max(), float((a - b).abs().max() / a.abs().max())


def test_accumulation_gives_the_gradient_of_the_full_batch(tiny_model_dir, tmp_path):
    data = Dataset.from_list(samples(1024))
    full = one_step_delta(tiny_model_dir, tmp_path, data, bs=4, accum=1)
    accumulated = one_step_delta(tiny_model_dir, tmp_path, data, bs=1, accum=4)
    assert_same(full, accumulated)
    hf_loss = one_step_delta(tiny_model_dir, tmp_path, data, bs=1, accum=4, chunk=0)  # transformers' own loss
    assert_same(full, hf_loss)


def test_packed_batch_gives_the_gradient_of_the_padded_batch(tiny_model_dir, tmp_path):
    data = Dataset.from_list(samples(1024))
    packed, _ = pack_examples(data, capacity=40)
    assert len(packed) < len(data)
    padded = one_step_delta(tiny_model_dir, tmp_path, data, bs=4, accum=1)
    assert_same(padded, one_step_delta(tiny_model_dir, tmp_path, packed, bs=len(packed), accum=1))
    leaky = one_step_delta(tiny_model_dir, tmp_path, packed, bs=len(packed), accum=1, isolate=False)
    assert (leaky - padded).abs().max() > 1e-3 * padded.abs().max()


def test_sample_weighting_is_batching_invariant_and_differs_from_token_weighting(tiny_model_dir, tmp_path):
    data = Dataset.from_list(samples(1024))
    token = one_step_delta(tiny_model_dir, tmp_path, data, bs=4, accum=1)
    sample_full = one_step_delta(tiny_model_dir, tmp_path, data, bs=4, accum=1, weighting="sample")
    sample_accum = one_step_delta(tiny_model_dir, tmp_path, data, bs=1, accum=4, weighting="sample")
    assert_same(sample_full, sample_accum)
    packed, _ = pack_examples(data, capacity=40)
    assert_same(sample_full, one_step_delta(tiny_model_dir, tmp_path, packed, bs=len(packed), accum=1,
                                            weighting="sample"))
    assert (token - sample_full).abs().max() > 1e-3 * token.abs().max()
