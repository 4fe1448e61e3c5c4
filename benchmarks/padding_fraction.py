"""Padding fraction of unpacked SFT batches on LLaMA-Factory's alpaca_en_demo, per batching strategy.

    python benchmarks/padding_fraction.py [--data ../shared/data/llamafactory-demo] [--cutoff-len 1024]

Tokenizes alpaca_en_demo with lmforge's pipeline (template qwen, the small-qwen2 tokenizer) and counts,
for one epoch of batches, padded positions / all positions (with the collator's pad_to_multiple_of 8):
  random          - per_device_train_batch_size 4, shuffled (transformers' default sampler)
  group_by_length - transformers' LengthGroupedSampler, batch 4 (`group_by_length: true`)
  token budget    - lmforge's TokenBudgetBatchSampler (`max_tokens_per_batch`)
and the non-pad fraction of rows with `packing: true`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from lmforge.config import load_config
from lmforge.data.pipeline import build_datasets
from lmforge.data.samplers import TokenBudgetBatchSampler
from lmforge.data.templates import get_template
from lmforge.model.from_config import build_preset_tokenizer


def padding_of(batches: list[list[int]], lengths: list[int], multiple: int = 8) -> float:
    real = padded = 0
    for batch in batches:
        width = -(-max(lengths[i] for i in batch) // multiple) * multiple
        real += sum(lengths[i] for i in batch)
        padded += width * len(batch)
    return 1 - real / padded


def tokenized_train(data_dir: str, cutoff_len: int, tmp: str, *extra: str):
    cfg = load_config(None, [f"model_name_or_path={tmp}", "dataset=alpaca_en_demo", f"dataset_dir={data_dir}",
                             f"cutoff_len={cutoff_len}", f"output_dir={tmp}", f"data_cache_dir={tmp}", *extra])
    tokenizer = build_preset_tokenizer("small-qwen2")
    return build_datasets(cfg.data, "sft", tokenizer, get_template("qwen", tokenizer), seed=42).train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/llamafactory-demo"))
    parser.add_argument("--cutoff-len", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=4096)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lengths = [len(ids) for ids in tokenized_train(args.data, args.cutoff_len, tmp)["input_ids"]]
        n_packed_rows = len(tokenized_train(args.data, args.cutoff_len, tmp, "packing=true"))
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    torch.manual_seed(0)
    grouped = list(LengthGroupedSampler(4, lengths=lengths))
    strategies = {
        "random, batch 4": [order[i : i + 4] for i in range(0, len(order), 4)],
        "group_by_length, batch 4": [grouped[i : i + 4] for i in range(0, len(grouped), 4)],
        f"max_tokens_per_batch {args.max_tokens}": list(TokenBudgetBatchSampler(lengths, args.max_tokens, seed=0)),
    }
    print(f"alpaca_en_demo: {len(lengths)} samples, {sum(lengths)} tokens, mean {sum(lengths) / len(lengths):.0f}, "
          f"max {max(lengths)}, cutoff_len {args.cutoff_len}")
    print(f"{'strategy':<34}{'batches':>8}{'padding':>9}")
    for name, batches in strategies.items():
        print(f"{name:<34}{len(batches):>8}{padding_of(batches, lengths):>9.1%}")
    packed_padding = 1 - sum(lengths) / (n_packed_rows * args.cutoff_len)
    print(f"{'packing: true (rows of cutoff_len)':<34}{n_packed_rows:>8}{packed_padding:>9.1%}")


if __name__ == "__main__":
    main()
