"""GRPO rollouts under LoRA: generate with the adapter unmerged, or merge it into the base for the rollout first?

    python benchmarks/rollout_adapter_merge.py            # ~1 min on 2 CPU cores; run it alone on the machine

Merging (peft's merge_adapter, then unmerge_adapter after the rollout) saves the adapter's two small matmuls per
targeted layer and token, at the price of one W += B A and one W -= B A per targeted weight and rollout. Unmerging
by subtraction also leaves the base weights a rounding error away from where they were, rollout after rollout;
restoring them exactly would need a copy. This measures both ways on the same prompts, with the rollout code
stage grpo uses, at a few completion lengths, and prints the ratio (merged time / unmerged time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lmforge.model.from_config import create_model
from lmforge.train.rl.rollout import row_seeds, sample_completions


def timed(model, ids, mask, new_tokens: int, merge: bool, repeats: int) -> float:
    best = float("inf")
    for repeat in range(repeats):
        started = time.perf_counter()
        if merge:
            model.merge_adapter()
        sample_completions(model, ids, mask, max_new_tokens=new_tokens, sampling={"temperature": 1.0},
                           stop_ids=[0], pad_id=0, seeds=row_seeds(0, repeat, 0, ids.shape[0]))
        if merge:
            model.unmerge_adapter()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-qwen2")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = create_model(args.preset, Path(tmp) / "m", seed=0, overrides={
            "hidden_size": args.hidden, "intermediate_size": 3 * args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": 8, "num_key_value_heads": 2})
        base = AutoModelForCausalLM.from_pretrained(path)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.prompt))
    mask = torch.ones_like(ids)
    print(f"{args.preset} hidden {args.hidden}, {args.layers} layers, LoRA r16 on all linear layers; "
          f"{args.batch} completions of a {args.prompt}-token prompt; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    print("| new tokens | unmerged s | merged (merge + generate + unmerge) s | merged / unmerged |")
    print("|---:|---:|---:|---:|")
    for new_tokens in (16, 64, 256):
        timed(model, ids, mask, 4, False, 1)  # warm-up
        unmerged = timed(model, ids, mask, new_tokens, False, args.repeats)
        merged = timed(model, ids, mask, new_tokens, True, args.repeats)
        print(f"| {new_tokens} | {unmerged:.3f} | {merged:.3f} | {merged / unmerged:.3f} |")


if __name__ == "__main__":
    main()
