"""Neat packing is exact: per-sample losses and the full gradient of a packed batch equal those of the
padded, unpacked batch (fp32, 1e-5 relative). Packing without isolation is shown to differ, so the test can
fail. Runs for every attention backend that works on CPU."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM

from lmforge.data.collators import Collator
from lmforge.data.packing import best_fit_decreasing, pack_examples
from lmforge.model import attention  # noqa: F401  (registers sdpa_varlen)
from lmforge.types import IGNORE_INDEX

LENGTHS = [5, 9, 13, 17, 22, 26, 31, 40]


def make_samples(vocab: int) -> list[dict]:
    rng = random.Random(0)
    samples = []
    for n in LENGTHS:
        ids = [rng.randrange(3, vocab - 3) for _ in range(n)]
        prompt = rng.randint(1, n // 2)  # the first tokens are a prompt: unlabelled
        samples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return samples


def per_sample_losses(logits, labels, segments) -> torch.Tensor:
    """Token-summed loss of each segment id (after the causal shift), in segment order."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    seg = segments[:, 1:].reshape(-1)
    token_loss = F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    keep = shift_labels != IGNORE_INDEX
    return torch.stack([token_loss[keep & (seg == s)].sum() for s in range(len(LENGTHS))])


def padded_run(model, samples):
    batch = Collator(pad_token_id=0)(samples)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    segments = torch.arange(len(samples)).unsqueeze(1).expand_as(batch["labels"])
    return per_sample_losses(out.logits, batch["labels"], segments)


def packed_run(model, samples, isolate: bool):
    rows, _ = pack_examples(Dataset.from_list(samples), capacity=64)
    batch = Collator(pad_token_id=0, isolate_packed=isolate)(rows.to_list())
    model_inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    out = model(**model_inputs, use_cache=False)  # with a cache transformers ignores packed position_ids
    # map each packed position back to its original sample index
    segments = torch.full_like(batch["labels"], -1)
    bins = best_fit_decreasing([len(s["input_ids"]) for s in samples], 64)
    for r, members in enumerate(bins):
        start = 0
        for i in sorted(members):
            segments[r, start : start + LENGTHS[i]] = i
            start += LENGTHS[i]
    return per_sample_losses(out.logits, batch["labels"], segments)


def grads(model, losses) -> torch.Tensor:
    model.zero_grad()
    losses.sum().backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("attn", ["sdpa_varlen", "sdpa", "eager"])
def test_neat_packing_matches_padded_losses_and_gradients(tiny_model_dir, attn):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn)
    samples = make_samples(model.config.vocab_size)
    bins = best_fit_decreasing(LENGTHS, 64)
    assert len(bins) < len(LENGTHS)  # several samples really share rows

    padded = padded_run(model, samples)
    padded_grad = grads(model, padded)
    packed = packed_run(model, samples, isolate=True)
    packed_grad = grads(model, packed)

    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=0)
    assert (packed_grad - padded_grad).abs().max() <= 1e-5 * padded_grad.abs().max()

    leaky = packed_run(model, samples, isolate=False)
    assert ((leaky - padded).abs() / padded).max() > 1e-3  # cross-sample attention changes the losses


def test_packed_labels_never_predict_across_samples():
    rows, efficiency = pack_examples(
        Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]),
        capacity=8,
    )
    row = rows[0]
    assert row["input_ids"] == [1, 2, 3, 4, 5]
    assert row["labels"] == [1, 2, 3, IGNORE_INDEX, 5]  # token 4 is not predicted from token 3
    assert row["sequence_lengths"] == [3, 2]
    assert efficiency == pytest.approx(5 / 8)
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)([row])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert "attention_mask" not in batch
    assert batch["_token_mask"].tolist() == [[True] * 5 + [False] * 3]


def test_best_fit_decreasing_fills_rows():
    rng = random.Random(1)
    lengths = [rng.randint(20, 900) for _ in range(2000)]
    bins = best_fit_decreasing(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(2000))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    assert sum(lengths) / (len(bins) * 1024) > 0.98  # 0.988 for this draw
