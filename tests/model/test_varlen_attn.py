"""varlen_attn: the packed batch in one varlen-kernel call per layer (CUDA), sdpa_varlen wherever the kernel does
not apply. On CPU the kernel is replaced by a reference of its contract (flattened tokens, cumulative offsets,
causal within each span) so that the layout, offsets and grouped-query handling around it are checked; the real
kernel against sdpa_varlen runs where CUDA is (marked gpu)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lmforge.model import varlen_attn
from lmforge.model.varlen_attn import cumulative_offsets


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """What varlen_attn computes, by the definition: causal attention inside each [cu[i], cu[i+1]) span."""
    assert window_size == (-1, 0) and torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
    assert max_q == max(int(b - a) for a, b in zip(cu_q[:-1], cu_q[1:]))
    out = []
    for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale,
                                                  enable_gqa=enable_gqa)[0].transpose(0, 1))
    return torch.cat(out)


def older_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False, return_aux=None, scale=None):
    """torch 2.10-2.11's signature: is_causal, and no grouped-query attention (K/V heads must match Q's)."""
    assert is_causal and k.shape[1] == q.shape[1]
    return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=(-1, 0))


def test_offsets_run_over_the_flattened_batch():
    offsets, longest = cumulative_offsets([[(0, 3), (3, 8)], [(0, 8)], [(0, 2), (2, 8)]], 8, "cpu")
    assert offsets.tolist() == [0, 3, 8, 16, 18, 24] and offsets.dtype == torch.int32 and longest == 8


@pytest.mark.parametrize("contract", [reference_varlen, older_varlen], ids=["window_size+gqa", "is_causal"])
def test_packed_forward_equals_sdpa_varlen_through_the_kernel_contract(tiny_model_dir, monkeypatch, contract):
    calls = []

    @functools.wraps(contract)  # the wrapper shows the kernel's signature (window_size, enable_gqa)
    def kernel(*args, **kwargs):
        calls.append(args[3].tolist())
        return contract(*args, **kwargs)

    monkeypatch.setattr(varlen_attn, "varlen_kernel", lambda: kernel)
    monkeypatch.setattr(varlen_attn, "_kernel_applies", lambda *a: True)
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 24))
    packed = torch.cat([torch.arange(10), torch.arange(9), torch.arange(5)]).repeat(2, 1)
    logits = {}
    for name in ("sdpa_varlen", "varlen_attn"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=name)
        logits[name] = model(input_ids=ids, position_ids=packed, use_cache=False).logits
    assert calls[0] == [0, 10, 19, 24, 34, 43, 48]  # one call per layer for the whole batch
    assert len(calls) == model.config.num_hidden_layers  # 4 query heads over 2 KV heads went through it too
    torch.testing.assert_close(logits["varlen_attn"], logits["sdpa_varlen"], rtol=0, atol=1e-5)


def test_without_cuda_it_is_sdpa_varlen(tiny_model_dir):
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (1, 16))
    pos = torch.cat([torch.arange(10), torch.arange(6)]).unsqueeze(0)
    out = [AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=name)(
        input_ids=ids, position_ids=pos, use_cache=False).logits for name in ("sdpa_varlen", "varlen_attn")]
    assert torch.equal(out[0], out[1])


def spy_on_kernel(monkeypatch, record) -> list:
    """The real kernel, with `record(args)` of every call appended to the returned list."""
    calls, real = [], varlen_attn.varlen_kernel()

    @functools.wraps(real)
    def counted(*args, **kwargs):
        calls.append(record(args))
        return real(*args, **kwargs)

    monkeypatch.setattr(varlen_attn, "varlen_kernel", lambda: counted)
    return calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or varlen_attn.varlen_kernel() is None, reason="needs CUDA")
def test_cuda_kernel_matches_sdpa_varlen_in_bf16(tiny_model_dir, monkeypatch):
    calls = spy_on_kernel(monkeypatch, lambda args: args[3].tolist())
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 24), device="cuda")
    packed = torch.cat([torch.arange(10), torch.arange(9), torch.arange(5)]).repeat(2, 1).cuda()
    losses, grads = {}, {}
    for name in ("sdpa_varlen", "varlen_attn"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=name,
                                                     dtype=torch.bfloat16).cuda()
        loss = model(input_ids=ids, position_ids=packed, labels=ids, use_cache=False).loss
        loss.backward()
        losses[name] = loss.item()
        grads[name] = model.model.layers[0].self_attn.q_proj.weight.grad.float()
    assert calls and calls[0] == [0, 10, 19, 24, 34, 43, 48]  # the kernel ran, not the fallback
    assert abs(losses["varlen_attn"] - losses["sdpa_varlen"]) < 2e-2
    torch.testing.assert_close(grads["varlen_attn"], grads["sdpa_varlen"], rtol=0.1, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or varlen_attn.varlen_kernel() is None, reason="needs CUDA")
def test_cuda_kernel_runs_under_autocast_over_fp32_weights(tiny_model_dir, monkeypatch):
    """bf16: true trains fp32 weights under autocast, where RoPE hands attention fp32 queries and keys."""
    calls = spy_on_kernel(monkeypatch, lambda args: args[0].dtype)
    ids = torch.randint(0, 300, (2, 24), device="cuda")
    packed = torch.cat([torch.arange(10), torch.arange(9), torch.arange(5)]).repeat(2, 1).cuda()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen_attn").cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(input_ids=ids, position_ids=packed, use_cache=False)
    assert calls and set(calls) == {torch.bfloat16}


def test_autocast_dtype_is_the_kernels_on_cpu_tensors_only_when_half():
    assert varlen_attn.half_dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.bfloat16
    assert varlen_attn.half_dtype(torch.zeros(1)) is None  # CPU fp32: no kernel, sdpa_varlen
