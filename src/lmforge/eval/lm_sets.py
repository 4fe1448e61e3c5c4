"""`lm` sets, OLMo's `lm` evaluator: token loss, perplexity and bits per byte of a model on held-out text.

    lmforge eval model_name_or_path=models/tiny tasks=lm:heldout.jsonl,lm:corpus_tokens/
    stream = lm_stream("lm:heldout.jsonl", tokenizer)         # token ids, each document + eos
    score_lm_stream(stream, model, tokenizer, seq_len=1024, batch_size=8)
    # {"loss,none": nats per token, "perplexity,none": exp(loss), "bits_per_byte,none": ..., "tokens": n, ...}

Named in `tasks` as `lm:<source>` rather than under a key of its own: `tasks` is the one list of what a run
scores (lm-eval's key), so held-out sets sit beside task names in one order and one results table, and the same
spec reads the same way in training's eval_tasks. The source is a data file that lmforge's readers read (.txt a
document per line, .json/.jsonl/.csv/.parquet with a `text` field), a dataset_info entry (`lm:<entry>` from
./dataset_info.json or `lm:<dataset_dir>/<entry>`; its `columns.prompt` is the text field when set) or a
directory written by `lmforge tokenize` (its meta.json and shards). Text is tokenized as `lmforge tokenize` does (no special tokens, eos after each
document), so a file and its memmap directory give the same stream and the same numbers.

The stream is cut into consecutive windows of `seq_len` tokens (the last one shorter); in each, every token
after the first is predicted from those before it, exactly as pretraining's loss sees a packed chunk. loss =
summed negative log-likelihood / predicted tokens; bits per byte = the same sum / ln 2 / the UTF-8 bytes of the
predicted tokens decoded window by window.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lmforge.errors import DataError
from lmforge.model.hidden_states import forward_hidden

PREFIX = "lm:"


def is_lm_set(name: str) -> bool:
    return name.startswith(PREFIX)


def check_lm_source(name: str) -> tuple[list[Path], str] | Path:
    """`lm:<source>` checked before the model loads: a `lmforge tokenize` directory (its Path), else the data
    files and text field of a data file or of a dataset_info entry (`lm:<entry>` in ./dataset_info.json, or
    `lm:<dataset_dir>/<entry>`)."""
    raw = name[len(PREFIX):].strip()
    if not raw:
        raise DataError(f"tasks: '{name}' names no source; write lm:<data file or `lmforge tokenize` directory>")
    source = Path(raw)
    if source.is_dir():
        return source
    if source.is_file():
        return [source], "text"
    from lmforge.data.dataset_info import DATASET_INFO, resolve_datasets

    dataset_dir = source.parent
    if not (dataset_dir / DATASET_INFO).is_file():
        raise DataError(f"tasks: {name}: {source} is neither a data file, a directory made by `lmforge tokenize`, "
                        f"nor an entry of a {DATASET_INFO} (none in {dataset_dir})")
    spec = resolve_datasets([source.name], str(dataset_dir))[0]
    # a pretraining entry names its text column as `columns.prompt` (LLaMA-Factory's pt datasets); else "text"
    column = spec.columns.prompt if "prompt" in spec.configured_columns else "text"
    return [Path(p) for p in spec.paths], column


def lm_stream(name: str, tokenizer) -> list[int]:
    """The token stream of `lm:<source>` (see `check_lm_source`)."""
    source = check_lm_source(name)
    if isinstance(source, Path):
        return _memmap_stream(source, tokenizer)
    from lmforge.data.sources import read_records

    files, column = source
    stream: list[int] = []
    for path in files:
        records = read_records(path)
        if not records:
            raise DataError(f"tasks: {name}: {path} holds no documents")
        for row, record in enumerate(records):
            text = record.get(column)
            if not isinstance(text, str):
                raise DataError(f"{path} record {row}: no '{column}' field (it has "
                                f"{', '.join(map(str, record)) or 'none'}); an lm set scores each record's text")
            stream += tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return stream


def _memmap_stream(directory: Path, tokenizer) -> list[int]:
    from lmforge.data.memmap.dataset import TokenShards, _check_tokenizer

    shards = TokenShards(directory)
    _check_tokenizer(shards, tokenizer)  # the same refusal pretraining gives for another tokenizer's shards
    return [int(t) for j in range(len(shards.shard_tokens)) for t in shards.tokens(j)]


def windows(stream: list[int], seq_len: int) -> list[list[int]]:
    """Consecutive windows of `seq_len` tokens; a last window of one token predicts nothing and is dropped."""
    return [w for w in (stream[i:i + seq_len] for i in range(0, len(stream), seq_len)) if len(w) > 1]


@torch.no_grad()
def score_lm_stream(stream: list[int], model, tokenizer, *, seq_len: int, batch_size: int) -> dict:
    """Loss (nats per predicted token), perplexity and bits per byte of `stream` (see the module docstring)."""
    chunks = windows(stream, seq_len)
    if not chunks:
        raise DataError("an lm set needs at least 2 tokens")
    device = next(model.parameters()).device
    head = getattr(model, "module", model).get_output_embeddings()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    nll, tokens, nbytes = 0.0, 0, 0
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, chunk in enumerate(batch):
            ids[r, :len(chunk)] = torch.tensor(chunk)
            mask[r, :len(chunk)] = 1
        _, hidden = forward_hidden(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device)})
        for r, chunk in enumerate(batch):
            # one row at a time through the vocabulary projection: [len - 1, vocab] fp32 at most, never the batch's
            logits = head(hidden[r, :len(chunk) - 1]).float()
            target = ids[r, 1:len(chunk)].to(logits.device)
            nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            tokens += len(chunk) - 1
            nbytes += len(tokenizer.decode(chunk[1:]).encode("utf-8"))
    loss = nll / tokens
    return {"loss,none": loss, "loss_stderr,none": "N/A", "perplexity,none": math.exp(loss),
            "perplexity_stderr,none": "N/A", "bits_per_byte,none": nll / math.log(2) / max(nbytes, 1),
            "bits_per_byte_stderr,none": "N/A", "tokens": tokens, "bytes": nbytes, "samples": len(chunks)}
