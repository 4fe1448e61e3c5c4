"""SHA-256 of every example's tokenized train/eval data, to show a refactor changed no token.

    python benchmarks/token_digests.py > before.json     # on the old commit
    python benchmarks/token_digests.py > after.json      # on the new one
    diff before.json after.json                           # empty: the same ids, labels and columns

Each example YAML under examples/ with a `dataset` is tokenized as `lmforge train` would (its stage, template,
cutoff, packing) with a fresh tiny tokenizer (`lmforge create-model tiny-qwen2`), bypassing the cache; the
digest covers every column of every row in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digest(dataset) -> str | None:
    if dataset is None:
        return None
    h = hashlib.sha256()
    for row in dataset:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    return f"{len(dataset)} rows {h.hexdigest()[:16]}"


def main() -> int:
    from lmforge.cli import main as cli
    from lmforge.config import load_config
    from lmforge.data.pipeline import build_datasets
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.data.templates import resolve_template

    work = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(ROOT / "examples", work / "examples")
        with contextlib.redirect_stdout(sys.stderr):
            assert cli(["create-model", "tiny-qwen2", str(work / "models" / "tiny")]) == 0
        results = {}
        for path in sorted((work / "examples").glob("*.yaml")):
            text = path.read_text()
            if "\ndataset:" not in text and "\neval_dataset:" not in text:
                continue
            cfg = load_config(path, [f"model_name_or_path={work / 'models' / 'tiny'}", "overwrite_cache=true",
                                     f"data_cache_dir={work / 'cache'}", f"output_dir={work / 'out'}",
                                     f"dataset_dir={work / 'examples' / 'data'}"])
            tokenizer = load_tokenizer(cfg.model)
            template = resolve_template(cfg.data.template, tokenizer)
            stage = cfg.finetuning.stage
            data = build_datasets(cfg.data, stage, tokenizer, template, seed=cfg.training.seed)
            results[path.stem] = {"stage": stage, "train": digest(data.train), "eval": digest(data.eval)}
        json.dump(results, sys.stdout, indent=1, sort_keys=True)
        print()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
