"""sdpa_varlen: spans found from position_ids, one SDPA call per packed sample, transformers' sdpa elsewhere."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lmforge.config.model_args import ModelArguments
from lmforge.model import attention
from lmforge.model.attention import sample_spans, sdpa_varlen_mask


def test_spans_start_wherever_positions_do_not_continue():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7], [5, 6, 0, 0, 0, 1, 2, 3]])
    assert sample_spans(pos) == [
        [(0, 3), (3, 5), (5, 8)],
        [(0, 8)],
        [(0, 2), (2, 3), (3, 4), (4, 8)],
    ]


def test_spans_are_recomputed_for_a_new_or_modified_tensor():
    pos = torch.tensor([[0, 1, 0, 1]])
    assert sample_spans(pos) == [[(0, 2), (2, 4)]]
    pos[0, 2:] = torch.tensor([2, 3])  # in place: the cached spans must not be reused
    assert sample_spans(pos) == [[(0, 4)]]
    assert sample_spans(torch.tensor([[0, 0, 1, 2]])) == [[(0, 1), (1, 4)]]


def test_mask_is_skipped_only_without_padding_or_cache():
    assert sdpa_varlen_mask(batch_size=2, q_length=8, kv_length=8) is None
    padded = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.bool)
    mask = sdpa_varlen_mask(batch_size=2, q_length=8, kv_length=8, attention_mask=padded)
    assert mask.shape == (2, 1, 8, 8) and mask.dtype == torch.bool
    assert not mask[1, 0, :, 5:].any()  # padded keys are masked for every query
    assert mask[0, 0, 7].all() and not mask[0, 0, 3, 4:].any()  # causal


def test_default_backend_is_sdpa_varlen():
    assert ModelArguments().attention == attention.NAME
    assert ModelArguments(flash_attn="sdpa").attention == attention.NAME
    assert ModelArguments(attn_implementation="sdpa").attention == "sdpa"  # transformers' own, on request
    assert ModelArguments(flash_attn="disabled").attention == "eager"


def test_packed_padded_and_cached_forwards_match_transformers_sdpa(tiny_model_dir):
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa_varlen")
    theirs = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)
    ids = torch.randint(3, ours.config.vocab_size, (2, 24))
    packed = torch.cat([torch.arange(10), torch.arange(9), torch.arange(5)]).repeat(2, 1)
    padded = torch.ones(2, 24, dtype=torch.long)
    padded[1, 17:] = 0
    for kwargs in ({"position_ids": packed}, {"attention_mask": padded}, {}):
        a = ours(input_ids=ids, use_cache=False, **kwargs).logits
        b = theirs(input_ids=ids, use_cache=False, **kwargs).logits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # generation goes through the KV-cache path of transformers' sdpa
    out_a = ours.generate(ids[:1, :6], max_new_tokens=5, do_sample=False)
    out_b = theirs.generate(ids[:1, :6], max_new_tokens=5, do_sample=False)
    assert out_a.tolist() == out_b.tolist()


def test_packed_forward_takes_one_call_per_sample(tiny_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa_varlen")
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.shape[2], kwargs.get("attn_mask") is None, kwargs.get("is_causal")))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    ids = torch.randint(3, model.config.vocab_size, (1, 16))
    model(input_ids=ids, position_ids=torch.cat([torch.arange(10), torch.arange(6)]).unsqueeze(0), use_cache=False)
    layers = model.config.num_hidden_layers
    assert calls == [(10, True, True), (6, True, True)] * layers  # no mask, causal within each sample


def test_compiled_model_does_not_recompile_for_new_packings(tiny_model_dir):
    """Under torch.compile the spans stay out of the graph (packed_attention runs eagerly): rows packed with other
    sample counts and lengths reuse the compiled graphs, and the logits equal the eager model's. Dynamo's guards
    do not depend on the backend, so a backend that only counts compilations shows it without inductor's time."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled_graphs = []

    def counting_backend(graph, example_inputs):
        compiled_graphs.append(graph)
        return graph.forward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa_varlen")
    compiled = torch.compile(model, backend=counting_backend)
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 24))
    packings = [[10, 9, 5], [24], [3, 3, 3, 15], [7, 17], [1, 22, 1]]
    counts = []
    for lengths in packings:
        pos = torch.cat([torch.arange(n) for n in lengths]).repeat(2, 1)
        with torch.no_grad():
            torch.testing.assert_close(compiled(input_ids=ids, position_ids=pos, use_cache=False).logits,
                                       model(input_ids=ids, position_ids=pos, use_cache=False).logits)
        counts.append(len(compiled_graphs))
    assert counts[0] > 0 and counts[1:] == [counts[0]] * (len(packings) - 1), counts
    torch._dynamo.reset()
