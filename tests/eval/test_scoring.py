"""Scorer: per-request log-likelihoods equal a direct forward pass of the tiny model, whatever the batching."""

from __future__ import annotations

import pytest
import torch

from lmforge.eval.scoring import Scorer

PAIRS = [
    ("Question: What comes after 41?\nAnswer:", " 42"),
    ("Question: What comes after 41?\nAnswer:", " 45"),
    ("The cat sat on the ", "mat"),  # trailing space moves into the continuation
    ("", "hello world"),  # empty context: conditioned on the prefix token
    ("A much longer context that goes on for a while, word after word,", " and then ends here."),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def direct(model, context_ids, continuation_ids):
    """log P(continuation | context) and is-greedy from one unbatched forward pass with full logits."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    rows = logprobs[len(context_ids) - 1:]
    target = torch.tensor(continuation_ids)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def test_pairs_are_tokenized_like_lm_eval(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok)
    context, continuation = scorer.encode_pair("The cat sat on the ", "mat")
    whole = tok.encode("The cat sat on the mat")
    assert context == tok.encode("The cat sat on the") and context + continuation == whole
    assert scorer.encode_pair("", "hello") == ([tok.eos_token_id], tok.encode("hello"))  # no BOS: EOS prefixes


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_loglikelihoods_equal_a_direct_forward_pass(model_and_tokenizer, batch_size):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, batch_size=batch_size, logit_rows=3)  # several projection chunks per batch
    got = scorer.loglikelihood(PAIRS)
    for (context, continuation), (ll, greedy) in zip(PAIRS, got):
        want_ll, want_greedy = direct(model, *scorer.encode_pair(context, continuation))
        assert ll == pytest.approx(want_ll, abs=1e-4) and greedy == want_greedy
    assert all(ll < 0 for ll, _ in got)


def test_is_greedy_when_the_continuation_is_the_models_argmax(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok)
    context = tok.encode("Question: What comes after 41?\nAnswer:")
    with torch.no_grad():
        generated = model.generate(torch.tensor([context]), max_new_tokens=3, do_sample=False)[0, len(context):].tolist()
    (ll, greedy), (_, not_greedy) = scorer.score_tokens([(context, generated), (context, generated[:-1] + [5])])
    assert greedy and not not_greedy and ll == pytest.approx(direct(model, context, generated)[0], abs=1e-4)


def test_rolling_windows_cover_every_token_once(model_and_tokenizer):
    model, tok = model_and_tokenizer
    text = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima " * 3
    tokens = tok.encode(text)
    full = Scorer(model, tok)
    whole, _ = direct(model, [tok.eos_token_id], tokens)
    assert full.loglikelihood_rolling([text])[0] == pytest.approx(whole, abs=1e-4)
    short = Scorer(model, tok, max_length=8)
    windows = short.rolling_windows(tokens)
    assert [t for _, cont in windows for t in cont] == tokens and windows[0][0] == [tok.eos_token_id]
    assert all(len(ctx) + len(cont) <= 9 for ctx, cont in windows)
    by_window = sum(direct(model, ctx, cont)[0] for ctx, cont in windows)
    assert short.loglikelihood_rolling([text, "alpha"])[0] == pytest.approx(by_window, abs=1e-4)


def test_generate_until_is_greedy_and_cut_at_the_stop_string(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, batch_size=2)
    contexts = ["Q: 3 plus 4?\nA:", "A longer prompt, so the batch is left-padded: Q: 1 plus 1?\nA:", "Hi"]
    got = scorer.generate_until(contexts, until=[], max_gen_toks=6)
    for context, text in zip(contexts, got):
        ids = tok.encode(context)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        assert text == tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
    stop = got[0][2:4]  # a stop string the first answer is known to contain
    assert scorer.generate_until(contexts[:1], until=[stop], max_gen_toks=6)[0] == got[0].split(stop)[0]


def test_one_token_choices_share_one_row(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, batch_size=8)
    context = "Question: pick a letter.\nAnswer:"
    pairs = [(context, f" {letter}") for letter in "ABCD"] + [(context, " a longer answer")]
    assert all(len(scorer.encode_pair(c, x)[1]) == 1 for c, x in pairs[:4])
    rows_run = []
    original = Scorer._score_batch

    def counting(self, inputs, wanted):
        rows_run.append(len(inputs))
        return original(self, inputs, wanted)

    monkeypatch.setattr(Scorer, "_score_batch", counting)
    got = scorer.loglikelihood(pairs)
    assert rows_run == [2]  # the four letters feed the same tokens: one row for them, one for the long answer
    for pair, (ll, greedy) in zip(pairs, got):
        assert ll == pytest.approx(direct(model, *scorer.encode_pair(*pair))[0], abs=1e-4)
