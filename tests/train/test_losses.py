"""token_cross_entropy and shift_labels against the oracle: F.cross_entropy on full fp32 logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.train.losses import shift_labels, token_cross_entropy
from lmforge.types import IGNORE_INDEX

N, H, V = 37, 16, 101


def make_inputs(dtype=torch.float32, ignore_every=3, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) / H**0.5).to(dtype).requires_grad_()
    b = (torch.randn(V, generator=gen) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (N,), generator=gen)
    if ignore_every:
        labels[::ignore_every] = IGNORE_INDEX
    return hidden, weight, b, labels


def oracle(hidden, weight, bias, labels, softcap=None, reduction="sum"):
    logits = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    out = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction=reduction)
    return out if reduction == "sum" else out[labels.ne(IGNORE_INDEX)]


def value_and_grads(fn, hidden, weight, bias, labels, **kwargs):
    loss = fn(hidden, weight, bias, labels, **kwargs)
    # A non-uniform upstream gradient also checks the per-token scaling of reduction="none".
    upstream = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.dim() else torch.tensor(1.0)
    params = [t for t in (hidden, weight, bias) if t is not None]
    grads = torch.autograd.grad((loss * upstream).sum(), params)
    return loss.detach(), grads


def ours(hidden, weight, bias, labels, **kwargs):
    return token_cross_entropy(hidden, weight, labels, lm_head_bias=bias, **kwargs)


def assert_close(actual, expected, rtol):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.float() - expected.float()).abs().max() / scale
    assert err <= rtol, f"relative error {float(err):.2e} > {rtol:.0e}"


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 24, 1024])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_fp32_values_and_gradients_match_full_logits(chunk_size, softcap, reduction):
    inputs = make_inputs()
    expected, expected_grads = value_and_grads(oracle, *inputs, softcap=softcap, reduction=reduction)
    actual, actual_grads = value_and_grads(
        ours, *inputs, chunk_size=chunk_size, logit_softcap=softcap, reduction=reduction
    )
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    assert_close(actual, expected, 1e-6)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert_close(a, e, 1e-6)


def test_ignored_positions_get_zero_gradient_and_are_left_out_of_none():
    hidden, weight, bias, labels = make_inputs(ignore_every=2)
    per_token = token_cross_entropy(hidden, weight, labels, lm_head_bias=bias, chunk_size=4, reduction="none")
    assert per_token.shape == (int(labels.ne(IGNORE_INDEX).sum()),)
    per_token.sum().backward()
    assert hidden.grad[labels.eq(IGNORE_INDEX)].abs().max() == 0
    assert hidden.grad[labels.ne(IGNORE_INDEX)].abs().min() > 0


def test_batched_input_is_flattened():
    hidden, weight, _, labels = make_inputs(bias=False)
    flat = token_cross_entropy(hidden, weight, labels, chunk_size=7)
    batched = token_cross_entropy(hidden[:36].reshape(4, 9, H), weight, labels[:36].reshape(4, 9), chunk_size=7)
    assert_close(batched, oracle(hidden[:36], weight, None, labels[:36]), 1e-6)
    assert flat.shape == batched.shape == ()


def test_no_supervised_token_gives_connected_zero():
    hidden, weight, bias, labels = make_inputs()
    labels[:] = IGNORE_INDEX
    loss = token_cross_entropy(hidden, weight, labels, lm_head_bias=bias)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()  # every parameter gets a zero gradient (DDP expects one from each)
    assert weight.grad is not None and weight.grad.abs().max() == 0 and bias.grad.abs().max() == 0
    assert token_cross_entropy(hidden, weight, labels, reduction="none").shape == (0,)


def test_frozen_weight_gets_no_gradient():
    hidden, weight, _, labels = make_inputs(bias=False)
    weight.requires_grad_(False)
    token_cross_entropy(hidden, weight, labels, chunk_size=8).backward()
    assert weight.grad is None and hidden.grad is not None


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_bf16_is_close_to_the_bf16_full_logits_path(softcap):
    inputs = make_inputs(dtype=torch.bfloat16)
    expected, expected_grads = value_and_grads(oracle, *inputs, softcap=softcap)
    actual, actual_grads = value_and_grads(ours, *inputs, chunk_size=8, logit_softcap=softcap)
    # Same bf16 matmul and fp32 softmax; only the chunked accumulation of the weight gradient differs.
    assert_close(actual, expected, 1e-5)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert a.dtype == torch.bfloat16
        assert_close(a, e, 1e-2)


def test_autocast_runs_the_projection_in_bf16_and_returns_fp32_gradients():
    hidden, weight, bias, labels = make_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, expected_grads = value_and_grads(oracle, hidden, weight, bias, labels)
        actual, actual_grads = value_and_grads(ours, hidden, weight, bias, labels, chunk_size=8)
    assert_close(actual, expected, 1e-5)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert a.dtype == torch.float32
        assert_close(a, e, 1e-2)


def test_bad_arguments_are_rejected():
    hidden, weight, _, labels = make_inputs(bias=False)
    with pytest.raises(ValueError, match="reduction"):
        token_cross_entropy(hidden, weight, labels, reduction="mean")
    with pytest.raises(ValueError, match="chunk_size"):
        token_cross_entropy(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="positions"):
        token_cross_entropy(hidden, weight, labels[:-1])


def test_shift_labels_unpacked_rows():
    labels = torch.tensor([[-100, -100, 5, 6, 7], [-100, 8, 9, -100, -100]])
    expected = torch.tensor([[-100, 5, 6, 7, -100], [8, 9, -100, -100, -100]])
    assert torch.equal(shift_labels(labels), expected)
    assert torch.equal(shift_labels(labels, torch.arange(5).expand(2, 5)), expected)


def test_shift_labels_packed_rows_never_predict_across_a_sample_boundary():
    # Row 0 packs samples of lengths 3, 4, 2; row 1 packs 5 and 4.
    labels = torch.tensor([
        [-100, 11, 12, -100, 21, 22, 23, 31, 32],
        [41, 42, 43, 44, 45, -100, -100, 51, 52],
    ])
    position_ids = torch.tensor([
        [0, 1, 2, 0, 1, 2, 3, 0, 1],
        [0, 1, 2, 3, 4, 0, 1, 2, 3],
    ])
    expected = torch.tensor([
        [11, 12, -100, 21, 22, 23, -100, 32, -100],
        [42, 43, 44, 45, -100, -100, 51, 52, -100],
    ])
    before = labels.clone()
    assert torch.equal(shift_labels(labels, position_ids), expected)
    assert torch.equal(labels, before)  # the input is not modified
    # A single [1, T] position_ids row (flattened packing) broadcasts over the batch it belongs to.
    assert torch.equal(shift_labels(labels[:1], position_ids[:1]), expected[:1])
