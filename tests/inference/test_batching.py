"""The continuous-batching engine on a real tiny model: requests of varied lengths joining and leaving at random
steps decode exactly what an unbatched `generate` gives each of them, seeded samples do not depend on the batch,
and the slot and cache bounds hold."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.inference.batching import BatchingEngine, SamplingParams


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    # Wider random weights than the preset's init: its greedy answers just repeat the last prompt token, which
    # any batching would reproduce; these vary token by token, so a row computed wrongly shows.
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() == 2):
            weight.normal_(0, 0.08)
    return model


def alone(model, prompt: list[int], max_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_tokens,
                             min_new_tokens=max_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_tokens_equal_unbatched_generate_at_any_arrival_order(model):
    rng = random.Random(0)
    vocab = model.config.vocab_size
    cases = [([rng.randrange(3, vocab) for _ in range(rng.randint(1, 24))], rng.randint(1, 12)) for _ in range(32)]
    engine = BatchingEngine(model, max_num_seqs=8, max_batch_tokens=400)
    arrivals: dict[int, list] = {}
    boxes = []
    for prompt, max_tokens in cases:
        box: list = []
        boxes.append(box)
        arrivals.setdefault(rng.randint(0, 30), []).append((prompt, SamplingParams(max_tokens=max_tokens), box))
    peak = 0
    step = 0
    while engine.has_work() or any(s >= step for s in arrivals):
        for prompt, params, box in arrivals.get(step, []):
            box.append(engine.submit(prompt, params))
        engine.step()
        peak = max(peak, engine.running)
        assert engine.cached_tokens <= 400
        step += 1
    assert peak >= 6  # requests really shared steps
    for (prompt, max_tokens), (request,) in zip(cases, boxes):
        assert request.finish_reason == "length"
        assert request.tokens == alone(model, prompt, max_tokens), request.id


def test_a_seeded_sample_does_not_depend_on_its_batch(model):
    params = SamplingParams(max_tokens=10, temperature=1.0, top_k=50, top_p=0.9, seed=1234)
    prompt = [5, 17, 42, 9]
    solo = BatchingEngine(model)
    request = solo.submit(prompt, params)
    while solo.has_work():
        solo.step()
    crowded = BatchingEngine(model, max_num_seqs=6)
    others = [crowded.submit([7] * n, SamplingParams(max_tokens=n, temperature=0.7, seed=n)) for n in range(2, 7)]
    crowded.step()
    crowded.step()
    again = crowded.submit(prompt, params)  # joins mid-way, beside rows of other lengths
    while crowded.has_work():
        crowded.step()
    assert again.tokens == request.tokens and len(again.tokens) == 10
    assert all(o.done for o in others)
    other_seed = BatchingEngine(model)
    third = other_seed.submit(prompt, SamplingParams(max_tokens=10, temperature=1.0, top_k=50, top_p=0.9, seed=99))
    while other_seed.has_work():
        other_seed.step()
    assert third.tokens != request.tokens


def test_stop_tokens_cancel_and_slot_bounds(model):
    engine = BatchingEngine(model, max_num_seqs=2, max_batch_tokens=64)
    prompt = [3, 4, 5]
    greedy = alone(model, prompt, 6)
    assert greedy[2] not in greedy[:2]
    stopped = engine.submit(prompt, SamplingParams(max_tokens=6, stop_token_ids=(greedy[2],)))
    long = engine.submit([6, 7], SamplingParams(max_tokens=40))
    waiting = engine.submit([8, 9], SamplingParams(max_tokens=5))
    engine.step()
    assert engine.running == 2 and not waiting.done  # max_num_seqs: the third waits
    while not stopped.done:
        engine.step()
    assert stopped.finish_reason == "stop" and stopped.tokens == greedy[:3]  # the stop token ends it, kept
    engine.cancel(long)
    assert long.finish_reason == "cancelled" and engine.running <= 1  # its slot and cache rows freed at once
    while engine.has_work():
        engine.step()
    assert waiting.finish_reason == "length" and waiting.tokens == alone(model, [8, 9], 5)
    assert engine.cached_tokens == 0
    with pytest.raises(ValueError, match="exceed max_batch_tokens"):
        engine.submit(list(range(3, 60)), SamplingParams(max_tokens=10))


def test_the_loop_thread_serves_many_threads_and_streams(model):
    import threading

    from lmforge.inference.engine_loop import EngineLoop

    loop = EngineLoop(BatchingEngine(model, max_num_seqs=6, max_batch_tokens=400))
    rng = random.Random(1)
    prompts = [[rng.randrange(3, model.config.vocab_size) for _ in range(rng.randint(1, 16))] for _ in range(16)]
    results: dict[int, list[int]] = {}

    def client(indices):
        for i in indices:
            handle = loop.submit(prompts[i], SamplingParams(max_tokens=6))
            results[i] = [token for token in handle]  # streamed one by one
            assert handle.finish_reason == "length"

    threads = [threading.Thread(target=client, args=(range(k, 16, 4),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(16))
    assert all(results[i] == alone(model, prompts[i], 6) for i in range(16))

    long = loop.submit([5, 6, 7], SamplingParams(max_tokens=300))
    first = next(iter(long))
    long.cancel()
    rest = list(long)
    assert long.finish_reason == "cancelled" and 1 + len(rest) < 300 and first is not None
    bad = loop.submit(list(range(3, 500)), SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="exceed max_batch_tokens"):
        list(bad)
    loop.close()
    assert loop.engine.running == 0


def test_repetition_penalty_equals_generate(model):
    prompt = [5, 9, 5, 12, 9, 30]
    engine = BatchingEngine(model)
    request = engine.submit(prompt, SamplingParams(max_tokens=12, repetition_penalty=1.8))
    plain = engine.submit(prompt, SamplingParams(max_tokens=12))
    while engine.has_work():
        engine.step()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, min_new_tokens=12,
                             repetition_penalty=1.8, pad_token_id=0)
    assert request.tokens == out[0, len(prompt):].tolist()
    assert request.tokens != plain.tokens  # the penalty changed the answer


def test_text_stream_pieces_make_the_decoded_text_and_cut_at_stop_strings(tiny_model_dir):
    from transformers import AutoTokenizer

    from lmforge.inference.text_stream import TextStream

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Hello wörld, naïve café — done.\n\nNext part"
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(tokenizer)
    pieces = [stream.push([token]) for token in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids) and sum(bool(p) for p in pieces) > 5
    # a stop string spanning several tokens: nothing of it, nor after it, is ever released
    stream = TextStream(tokenizer, stops=["never", "\n\nNext"])
    released = ""
    for token in ids:
        released += stream.push([token])
        assert "\n\n" not in released
        if stream.stopped:
            break
    released += stream.finish()
    assert stream.stopped and released == "Hello wörld, naïve café — done."
