"""BLEU-4 / ROUGE against the values nltk's sentence_bleu (smoothing method3) and rouge_chinese print for the
same pairs, as LLaMA-Factory's predict computes them (reference values from
`benchmarks/text_metrics_vs_llamafactory.py`, which also checks 300 random pairs: worst difference 1.1e-16)."""

from __future__ import annotations

import pytest

from lmforge.eval.text_metrics import bleu4, rouge_scores, similarity_scores

# (prediction, reference) -> rouge-1, rouge-2, rouge-l, bleu-4 as printed by rouge_chinese / nltk
CASES = [
    ("The cat sat on the mat.", "The cat is on the mat.", 0.8571428521, 0.6666666617, 0.8571428521, 0.7944837206),
    ("", "nothing predicted", 0, 0, 0, 0),
    ("something", "", 0, 0, 0, 0),
    ("a", "a", 0.999999995, 0, 0.999999995, 0.3535533906),
    ("ab", "abc", 0, 0, 0, 0.360645288),
    ("abcdefgh", "abcdefgh", 0.999999995, 0, 0.999999995, 1.0),
    ("the the the the", "the cat", 0.6666666622, 0, 0.3333333289, 0.1739579738),
    ("我爱北京天安门。天安门上太阳升！", "我爱北京天安门，天安门上太阳升。", 0.874999995, 0.624999995, 0.7777777728, 0.7577395672),
    ("今天天气很好，我们去公园散步吧？好的。", "今天天气不错，一起去公园走走吧。", 0.5714285665, 0.0999999952, 0.5454545406,
     0.200389085),
    ("Line one.\nLine two?\n\nLine three", "Line one. Line two? Line 3", 0.7692307643, 0.6249999951, 0.7777777728,
     0.6170551094),
    ("   ", "x", 0, 0, 0, 0),
    ("Numbers: 1, 2, 3...... and more……more", "Numbers 1 2 3 and more", 0.7499999953, 0.1176470547, 0.631578943,
     0.4102044954),
    ("混合 mixed 文本 text，with 标点!", "mixed 文本 text 和 标点", 0.6153846107, 0.363636359, 0.6153846107, 0.553814228),
    ("xyz", "abc", 0, 0, 0, 0),
    ("重复重复重复重复", "重复", 0.999999995, 0, 0.3999999968, 0.1104479557),
]


@pytest.mark.parametrize(("prediction", "reference", "r1", "r2", "rl", "bleu"), CASES)
def test_scores_equal_nltk_and_rouge_chinese(prediction, reference, r1, r2, rl, bleu):
    rouge = rouge_scores(prediction, reference)
    assert rouge["rouge-1"] == pytest.approx(r1, abs=1e-9)
    assert rouge["rouge-2"] == pytest.approx(r2, abs=1e-9)
    assert rouge["rouge-l"] == pytest.approx(rl, abs=1e-9)
    assert bleu4(prediction, reference) == pytest.approx(bleu, abs=1e-9)


def test_similarity_scores_round_each_sample_then_average():
    predictions, references = [c[0] for c in CASES[:4]], [c[1] for c in CASES[:4]]
    scores = similarity_scores(predictions, references)
    assert scores["bleu-4"] == pytest.approx((79.4484 + 0 + 0 + 35.3553) / 4, abs=1e-9)
    assert scores["rouge-1"] == pytest.approx((85.7143 + 0 + 0 + 100.0) / 4, abs=1e-9)
    assert scores["rouge-l"] == pytest.approx((85.7143 + 0 + 0 + 100.0) / 4, abs=1e-9)
    assert similarity_scores([], []) == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    with pytest.raises(ValueError):
        similarity_scores(["a"], [])
