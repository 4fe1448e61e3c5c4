"""lmforge's BLEU-4 / ROUGE against LLaMA-Factory's own scoring (nltk + rouge_chinese + jieba) on random pairs.

    python benchmarks/text_metrics_vs_llamafactory.py [--pairs 300] [--peer-python benchmarks/.venv-llamafactory/bin/python]

The peer venv needs `pip install nltk rouge-chinese jieba` (LLaMA-Factory's "metrics" extra). Prints the
worst absolute difference per metric and both sides' time.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = """
import json, sys, time, jieba
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge
jieba.initialize()
start = time.perf_counter(); out = []
for pred, label in json.load(open(sys.argv[1])):
    hypothesis, reference = list(jieba.cut(pred)), list(jieba.cut(label))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
        result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
    scores = {k: v["f"] for k, v in result.items()}
    scores["bleu-4"] = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
    out.append(scores)
print(json.dumps({"seconds": time.perf_counter() - start, "scores": out}))
"""

ZH = ["我爱北京天安门", "今天天气很好", "我们去公园散步吧", "机器学习是人工智能的一个分支", "请给我一杯水", "这本书非常有意思",
      "他昨天去了上海", "模型的训练需要大量数据", "你好，世界", "数据清洗很重要", "我们明天见", "学习使人进步"]
EN = ["the model", "learns from data", "and it", "was trained", "on a small corpus", "of text.", "Results:", "1, 2, 3",
      "improved", "quickly!", "Why?", "because", "the loss", "went down"]
PUNCT = ["，", "。", "！", "？", " ", "\n", "……", "、", ". ", "? "]


def random_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def text(words):
        return "".join(rng.choice(words) + rng.choice(PUNCT) for _ in range(rng.randint(0, 12)))

    pairs = []
    for i in range(count):
        words = ZH if i % 2 else EN
        a, b = text(words), text(words)
        if i % 3 == 0:  # a near copy
            b = a[: len(a) // 2] + a[len(a) // 2 + 5 :]
        pairs.append((a, b))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--peer-python", default="benchmarks/.venv-llamafactory/bin/python")
    args = parser.parse_args()
    from lmforge.eval.text_metrics import bleu4, rouge_scores, segment

    pairs = random_pairs(args.pairs, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.json"
        path.write_text(json.dumps(pairs, ensure_ascii=False))
        done = subprocess.run([args.peer_python, "-c", PEER, str(path)], capture_output=True, text=True, check=True)
    peer = json.loads(done.stdout)
    segment("warm up jieba")
    start = time.perf_counter()
    ours = [{**rouge_scores(p, r), "bleu-4": bleu4(p, r)} for p, r in pairs]
    seconds = time.perf_counter() - start
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        worst = max(abs(o[key] - t[key]) for o, t in zip(ours, peer["scores"]))
        print(f"{key}: worst |lmforge - llamafactory| over {len(pairs)} pairs = {worst:.3g}")
    print(f"time: lmforge {seconds:.2f} s, llamafactory scoring {peer['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
