"""Which datasets to read and how to turn them into tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MixStrategy = Literal["concat", "interleave_under", "interleave_over", "interleave_once"]
"""How several datasets merge (LLaMA-Factory's names); data/loading.py maps each to a stopping strategy."""


@dataclass(frozen=True)
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "Comma-separated dataset_info.json entries or data file paths for training."},
    )
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Comma-separated datasets for evaluation (instead of val_size)."}
    )
    dataset_dir: str = field(default="data", metadata={"help": "Folder holding dataset_info.json and the data files."})
    template: str | None = field(
        default=None,
        metadata={"help": "Chat template name, or 'auto' for the tokenizer's own chat_template (default when it has one)."},
    )
    cutoff_len: int = field(default=2048, metadata={"help": "Maximum tokens per sample after tokenization."})
    train_on_prompt: bool = field(default=False, metadata={"help": "Also train on prompt tokens (labels not masked)."})
    mask_history: bool = field(default=False, metadata={"help": "Train only on the last assistant turn."})
    packing: bool | None = field(
        default=None,
        metadata={"help": "Concatenate samples into cutoff_len rows (default: on for pt, off otherwise)."},
    )
    neat_packing: bool | None = field(
        default=None,
        metadata={"help": "Keep packed samples apart: positions restart and no token attends across samples "
                  "(implies packing; default on whenever sft packs, set false for plain concatenation)."},
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={"help": "Form training batches by a token budget (samples x longest <= this) from length-sorted "
                  "windows, instead of a fixed per_device_train_batch_size; cuts padding of unpacked sft."},
    )
    mix_strategy: MixStrategy = field(
        default="concat", metadata={"help": "How several datasets merge: concat, interleave_under, interleave_over."}
    )
    interleave_probs: str | None = field(
        default=None, metadata={"help": "Comma-separated sampling probabilities for interleaving."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Keep at most this many records per dataset."})
    val_size: float = field(
        default=0.0, metadata={"help": "Held-out eval split: a fraction (< 1) or a record count (>= 1)."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize even when a cached copy exists."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes used to tokenize (default: one)."}
    )
    preprocessing_batch_size: int = field(default=1000, metadata={"help": "Records per tokenization batch."})
    tokenized_path: str | None = field(
        default=None,
        metadata={"help": "Save the tokenized dataset here, or load it from here when it exists (skips the data files)."},
    )
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "Folder of the tokenized-dataset cache (default: ~/.cache/lmforge/tokenized)."}
    )
    default_system: str | None = field(default=None, metadata={"help": "System prompt used when a sample has none."})
    enable_thinking: bool = field(
        default=True,
        metadata={"help": "Reasoning templates (qwen3, deepseekr1): true trains an empty <think> block before answers "
                  "that have none; false removes thoughts from answers and ends each prompt (and the generation "
                  "prompt) with the empty block, untrained. Other templates ignore it."},
    )
    placeholders: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Values for {{key}} placeholders in the data, e.g. {name: Forge, author: lmforge}."},
    )
    streaming: bool = field(default=False, metadata={"help": "Not supported yet: use memmap shards for large corpora."})
    memmap_path: str | None = field(
        default=None,
        metadata={
            "help": "Stage pt: `lmforge tokenize` output directories (comma-separated) to train on in cutoff_len "
            "chunks, instead of 'dataset'."
        },
    )
    eval_memmap_path: str | None = field(
        default=None, metadata={"help": "Held-out memmap shard directories for in-loop perplexity at eval_steps."}
    )
    isolate_documents: bool = field(
        default=False,
        metadata={"help": "memmap chunks: attend only within each document (position_ids restart per document)."},
    )

    @property
    def packs(self) -> bool | None:
        """`packing`, with `neat_packing: true` implying it; None = the stage's default."""
        return True if self.neat_packing else self.packing

    @property
    def isolates_packed_samples(self) -> bool:
        return self.neat_packing is not False

    @property
    def memmap_dirs(self) -> list[str]:
        return _split(self.memmap_path)

    @property
    def eval_memmap_dirs(self) -> list[str]:
        return _split(self.eval_memmap_path)

    @property
    def dataset_names(self) -> list[str]:
        return _split(self.dataset)

    @property
    def eval_dataset_names(self) -> list[str]:
        return _split(self.eval_dataset)

    @property
    def interleave_probabilities(self) -> list[float] | None:
        return [float(p) for p in _split(self.interleave_probs)] or None


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]
