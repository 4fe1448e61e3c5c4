"""`lmforge average CKPT... --output DIR`: the weight average of checkpoints (full models or LoRA adapters).

    lmforge average saves/run/checkpoint-800 saves/run/checkpoint-900 saves/run/checkpoint-1000 --output saves/avg
    lmforge average saves/run/checkpoint-* --output saves/ema --ema 0.9     # later checkpoints weigh more

Uniform by default; `--ema D` weighs checkpoint i of n (in the order given, oldest first) by D^(n-1-i), normalised,
which is what an exponential moving average sampled at these checkpoints gives. Every tensor is averaged in float64
and written back in its saved dtype, so averaging identical checkpoints returns them bit for bit. Each safetensors
file of the last checkpoint (model.safetensors, its shards, adapter_model.safetensors) is averaged with the file of
the same name in every other checkpoint, one file at a time; the other files (config, tokenizer, adapter config,
lmforge_run.json) are copied from the last checkpoint. Checkpoints whose files, tensor names or shapes differ are
refused with the first difference named.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from lmforge.errors import ConfigError
from lmforge.logging import get_logger

logger = get_logger(__name__)

SKIPPED = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin")
"""Trainer state in a checkpoint directory: meaningless for the average, not copied."""


def average_weights(n: int, ema: float | None) -> list[float]:
    if ema is None:
        return [1.0 / n] * n
    if not 0 < ema < 1:
        raise ConfigError(f"--ema must be in (0, 1), got {ema}")
    raw = [ema ** (n - 1 - i) for i in range(n)]
    return [w / sum(raw) for w in raw]


def average_checkpoints(checkpoints: list[Path], output: Path, ema: float | None = None,
                        overwrite: bool = False) -> Path:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    if len(checkpoints) < 2:
        raise ConfigError("lmforge average: give at least two checkpoints")
    for path in checkpoints:
        if not path.is_dir():
            raise ConfigError(f"lmforge average: {path} is not a directory")
    last = checkpoints[-1]
    files = sorted(p.name for p in last.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"lmforge average: {last} holds no .safetensors weights (lmforge saves safetensors only)")
    for path in checkpoints[:-1]:
        theirs = sorted(p.name for p in path.glob("*.safetensors"))
        if theirs != files:
            raise ConfigError(f"lmforge average: {path} has weight files {theirs}, {last} has {files}: the "
                              "checkpoints must come from the same run setup")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"lmforge average: {output} is not empty; pass --overwrite to replace its files")
    output.mkdir(parents=True, exist_ok=True)
    weights = average_weights(len(checkpoints), ema)
    for name in files:
        handles = [safe_open(str(path / name), framework="pt") for path in checkpoints]
        keys = list(handles[-1].keys())
        for path, handle in zip(checkpoints, handles):
            if sorted(handle.keys()) != sorted(keys):
                missing = sorted(set(keys) ^ set(handle.keys()))[:3]
                raise ConfigError(f"lmforge average: {path / name} and {last / name} hold different tensors "
                                  f"(e.g. {', '.join(missing)})")
        averaged = {}
        for key in keys:
            tensors = [handle.get_tensor(key) for handle in handles]
            for path, tensor in zip(checkpoints, tensors):
                if tensor.shape != tensors[-1].shape:
                    raise ConfigError(f"lmforge average: {key} is {tuple(tensor.shape)} in {path}, "
                                      f"{tuple(tensors[-1].shape)} in {last}")
            if not tensors[-1].is_floating_point():
                averaged[key] = tensors[-1]  # integer buffers (position ids, counters): the last one's
                continue
            total = torch.zeros(tensors[-1].shape, dtype=torch.float64)
            if ema is None:
                for tensor in tensors:
                    total += tensor.to(torch.float64)
                total /= len(tensors)  # sum, then one division: identical inputs come back exactly
            else:
                for weight, tensor in zip(weights, tensors):
                    total += weight * tensor.to(torch.float64)
            averaged[key] = total.to(tensors[-1].dtype).contiguous()
        save_file(averaged, str(output / name), metadata=handles[-1].metadata() or {"format": "pt"})
    for path in last.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in SKIPPED:
            shutil.copy2(path, output / path.name)
    logger.info("averaged %d checkpoints (%s) into %s", len(checkpoints),
                "uniform" if ema is None else f"EMA {ema}: weights " + ", ".join(f"{w:.3f}" for w in weights), output)
    return output


def average_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge average", description="Average the weights of checkpoints "
                                     "(full models or LoRA adapters) into one model.")
    parser.add_argument("checkpoints", nargs="+", help="checkpoint or model directories, oldest first")
    parser.add_argument("--output", required=True, help="directory for the averaged model")
    parser.add_argument("--ema", type=float, default=None,
                        help="weigh checkpoint i of n by EMA^(n-1-i) instead of uniformly (e.g. 0.9)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --output")
    args = parser.parse_args(argv)
    path = average_checkpoints([Path(p) for p in args.checkpoints], Path(args.output), args.ema, args.overwrite)
    print(f"lmforge average: {len(args.checkpoints)} checkpoints -> {path}")
    return 0
