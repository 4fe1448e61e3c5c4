"""`lmforge tokenize` throughput: tokens/s for 1 worker and for all cores, and peak memory.

    .venv/bin/python benchmarks/tokenize_throughput.py                  # c4_demo x 40 (~30 MB of text)
    .venv/bin/python benchmarks/tokenize_throughput.py --copies 200     # a bigger corpus: memory stays flat

The corpus is LLaMA-Factory's c4_demo.jsonl (../shared/data/llamafactory-demo) repeated `--copies` times
into one jsonl file (or a generated text corpus without ../shared). The tokenizer is the small-qwen2
preset's byte-level BPE (5,896 ids, so shards are uint16). Each configuration runs in its own process so
the peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
C4 = HERE.parents[1] / "shared" / "data" / "llamafactory-demo" / "c4_demo.jsonl"


def build_corpus(path: Path, copies: int) -> int:
    if C4.exists():
        lines = C4.read_text().splitlines()
    else:
        rng = random.Random(0)
        words = "the of and to in a is that for it as was with be by on not he this are or".split()
        lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(400))}) for _ in range(300)]
    with open(path, "w") as f:
        for _ in range(copies):
            f.write("\n".join(lines) + "\n")
    return path.stat().st_size


def child(corpus: str, tokenizer: str, out: str, workers: int) -> None:
    from lmforge.data.memmap.writer import tokenize_corpus

    result = tokenize_corpus([corpus], tokenizer, out, workers=workers, overwrite=True, progress=False)
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"tokens": result.num_tokens, "documents": result.num_documents, "seconds": result.seconds,
                      "tokens_per_second": result.tokens_per_second, "peak_rss_main": peak_self,
                      "peak_rss_worker": peak_children}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return 0
    from lmforge.model.from_config import create_model

    work = Path(tempfile.mkdtemp(prefix="lmforge-tokenize-bench-"))
    model = create_model("small-qwen2", work / "model", seed=0)
    corpus = work / "corpus.jsonl"
    size = build_corpus(corpus, args.copies)
    print(f"corpus: {size / 1e6:.1f} MB jsonl ({args.copies} x {'c4_demo' if C4.exists() else 'generated'}), "
          f"{os.cpu_count()} cores")
    print("| workers | tokens | documents | seconds | tokens/s | peak RSS main / worker (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for workers in sorted({1, os.cpu_count() or 1}):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(model), str(work / "out"),
                               str(workers)], capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {workers} | {r['tokens']:,} | {r['documents']:,} | {r['seconds']:.1f} | "
              f"{r['tokens_per_second']:,.0f} | {r['peak_rss_main'] / 2**20:.0f} / {r['peak_rss_worker'] / 2**20:.0f} |"
              f"  (process {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
