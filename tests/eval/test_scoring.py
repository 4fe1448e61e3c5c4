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


def _count_rows(monkeypatch) -> list[list[int]]:
    """The lengths of the rows of every forward pass the scorer runs."""
    runs: list[list[int]] = []
    original = Scorer._score_rows

    def counting(self, rows):
        runs.append([len(row) for row in rows])
        return original(self, rows)

    monkeypatch.setattr(Scorer, "_score_rows", counting)
    return runs


def test_one_token_choices_share_one_row(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, batch_size=8)
    context = "Question: pick a letter.\nAnswer:"
    pairs = [(context, f" {letter}") for letter in "ABCD"] + [(context, " a longer answer")]
    assert all(len(scorer.encode_pair(c, x)[1]) == 1 for c, x in pairs[:4])
    runs = _count_rows(monkeypatch)
    got = scorer.loglikelihood(pairs)
    context_len = len(scorer.encode_pair(*pairs[0])[0])
    long_len = len(scorer.encode_pair(*pairs[4])[1])
    # the four letters are read off the context's last position: one row holds the context and the long answer
    assert runs == [[context_len + long_len - 1]]
    for pair, (ll, greedy) in zip(pairs, got):
        assert ll == pytest.approx(direct(model, *scorer.encode_pair(*pair))[0], abs=1e-4)


ENDINGS = [" walks the dog around the block twice", " eats a sandwich", " reads the whole newspaper slowly today",
           " sleeps"]


def mc_pairs(n_questions: int) -> list[tuple[str, str]]:
    contexts = [f"Story {q}: a person opens the door, looks outside for a while and then" for q in range(n_questions)]
    return [(c, e) for c in contexts for e in ENDINGS]


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_multi_token_choices_share_their_context_and_equal_separate_passes(model_and_tokenizer, monkeypatch,
                                                                           batch_size):
    model, tok = model_and_tokenizer
    pairs = mc_pairs(3)
    runs = _count_rows(monkeypatch)
    scorer = Scorer(model, tok, batch_size=batch_size)
    got = scorer.loglikelihood(pairs)
    worst = 0.0
    for pair, (ll, greedy) in zip(pairs, got):
        want_ll, want_greedy = direct(model, *scorer.encode_pair(*pair))
        worst = max(worst, abs(ll - want_ll))
        assert greedy == want_greedy
    assert worst < 1e-4
    fed = sum(n for run in runs[1:] for n in run)  # runs[0] is the one-time check of the shared mask
    separate = sum(len(c) + len(x) - 1 for c, x in (scorer.encode_pair(*p) for p in pairs))
    assert fed < 0.55 * separate  # each context fed once instead of four times
    assert scorer.share_prefix


def test_a_model_that_ignores_the_mask_is_scored_request_by_request(model_and_tokenizer, monkeypatch, caplog):
    import lmforge.eval.scoring as scoring

    model, tok = model_and_tokenizer

    def causal_only(rows, width, dtype):  # what a model that drops a custom mask would compute
        mask = torch.zeros(len(rows), 1, width, width, dtype=dtype)
        return mask.masked_fill(~torch.ones(width, width, dtype=torch.bool).tril(), torch.finfo(dtype).min)

    monkeypatch.setattr(scoring, "shared_prefix_mask", causal_only)
    pairs = mc_pairs(2)
    scorer = Scorer(model, tok, batch_size=4)
    with caplog.at_level("WARNING", logger="lmforge"):
        got = scorer.loglikelihood(pairs)
    assert not scorer.share_prefix and "ignores a custom attention mask" in caplog.text
    for pair, (ll, _) in zip(pairs, got):
        assert ll == pytest.approx(direct(model, *scorer.encode_pair(*pair))[0], abs=1e-4)


def test_absolute_position_models_share_contexts_too(tmp_path, model_and_tokenizer):
    """GPT-2 adds learned position embeddings: the position ids of each choice must restart after the context."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = model_and_tokenizer
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)).eval()
    pairs = mc_pairs(2)
    scorer = Scorer(model, tok, batch_size=4)
    got = scorer.loglikelihood(pairs)
    assert scorer.share_prefix
    for pair, (ll, _) in zip(pairs, got):
        assert ll == pytest.approx(direct(model, *scorer.encode_pair(*pair))[0], abs=1e-4)


def test_batch_size_auto_halves_after_out_of_memory(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    pairs = mc_pairs(6) + [(f"Question {i}: which letter?", " A") for i in range(20)]
    want = Scorer(model, tok, batch_size=1).loglikelihood(pairs)
    original = Scorer._score_rows
    sizes = []

    def limited(self, rows):
        sizes.append(len(rows))
        if len(rows) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, rows)

    monkeypatch.setattr(Scorer, "_score_rows", limited)
    scorer = Scorer(model, tok, batch_size="auto", max_batch_size=64)
    got = scorer.loglikelihood(pairs)
    assert scorer.auto_batch == 4 and max(s for s in sizes if s <= 5) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert [round(ll, 4) for ll, _ in got] == [round(ll, 4) for ll, _ in want]
    with pytest.raises(RuntimeError, match="device-side assert"):  # any other error is not a reason to shrink
        monkeypatch.setattr(Scorer, "_score_rows", lambda self, rows: (_ for _ in ()).throw(RuntimeError("device-side assert")))
        Scorer(model, tok, batch_size="auto").loglikelihood(pairs)
