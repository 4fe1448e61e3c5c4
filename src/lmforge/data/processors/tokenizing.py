"""Each data kind's tokenization over a whole `datasets.Dataset` of loaded rows (the registry's entries).

    train = tokenize_supervised(convs, data_args, tokenizer, template, split="train", report=[], packs=False)

Every function maps its kind's one-record processor (`supervised`, `pairwise`, `feedback`, `pretrain`) over
the rows in batches, then applies what needs the whole dataset: dropping rows whose response was truncated
away (counted in `report`), and packing. `packs` is the run's packing decision, already resolved against
the stage's default (`Stage.packs_by_default`), so no function here knows which stage it serves.
"""

from __future__ import annotations

from datasets import Dataset

from lmforge.config.data_args import DataArguments
from lmforge.data.formats import pair_from_dict
from lmforge.data.packing import pack_examples
from lmforge.data.processors.feedback import encode_feedback, mismatched_responses
from lmforge.data.processors.pairwise import encode_pairwise
from lmforge.data.processors.prompts import encode_prompt_row
from lmforge.data.processors.pretrain import pack_documents, tokenize_documents, truncate_documents
from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.errors import DataError
from lmforge.logging import get_logger
from lmforge.types import IGNORE_INDEX, Conversation

logger = get_logger(__name__)


def map_conversations(convs: Dataset, data_args: DataArguments, split: str, columns: tuple[str, ...], encode,
                      desc: str | None = None) -> Dataset:
    """`encode(conversation) -> {column: value}` over every record, the default system filled in where a record has
    none; only `columns` are kept."""
    default_system = data_args.default_system

    def encode_batch(batch):
        out: dict[str, list] = {name: [] for name in columns}
        for row in rows(batch):
            conv = Conversation.from_dict(row)
            if not conv.system and default_system:
                conv.system = default_system
            encoded = encode(conv)
            for name in columns:
                out[name].append(encoded[name])
        return out

    return map_batches(convs, encode_batch, data_args, split, desc=desc)


def tokenize_supervised(
    convs: Dataset, data_args: DataArguments, tokenizer, template, *, split: str, report: list[str], packs: bool
) -> Dataset:
    options = SupervisedOptions(data_args.cutoff_len, data_args.train_on_prompt, data_args.mask_history)
    tokenized = map_conversations(convs, data_args, split, ("input_ids", "attention_mask", "labels"),
                                  lambda conv: encode_supervised(conv, template, tokenizer, options))
    kept = drop_unsupervised(tokenized, ["labels"], data_args, split, report)
    if packs and split == "train":
        # Eval stays one sample per row, so eval losses are per-sample exact whatever the packing.
        packed, efficiency = pack_examples(kept, data_args.cutoff_len)
        logger.info(
            "packed %d samples into %d rows of %d tokens: packing efficiency %.1f%% (%s)",
            len(kept), len(packed), data_args.cutoff_len, 100 * efficiency,
            "samples isolated" if data_args.isolates_packed_samples else "attention crosses samples",
        )
        return packed
    return kept


def tokenize_pairwise(
    convs: Dataset, data_args: DataArguments, tokenizer, template, *, split: str, report: list[str], packs: bool
) -> Dataset:
    default_system = data_args.default_system

    def encode_batch(batch):
        out = {name: [] for name in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")}
        for row in rows(batch):
            pair = pair_from_dict(row)
            if not pair.prompt.system and default_system:
                pair.prompt.system = default_system
            for name, ids in encode_pairwise(pair, template, tokenizer, data_args.cutoff_len).items():
                out[name].append(ids)
        return out

    tokenized = map_batches(convs, encode_batch, data_args, split)
    return drop_unsupervised(tokenized, ["chosen_labels", "rejected_labels"], data_args, split, report)


def tokenize_feedback(
    convs: Dataset, data_args: DataArguments, tokenizer, template, *, split: str, report: list[str], packs: bool
) -> Dataset:
    default_system = data_args.default_system

    def encode_batch(batch):
        out = {name: [] for name in ("input_ids", "labels", "kl_input_ids", "kl_labels", "kto_tag")}
        conversations = [Conversation.from_dict(row) for row in rows(batch)]
        for conv, kl_response, tag in zip(conversations, mismatched_responses(conversations), batch["kto_tag"]):
            if not conv.system and default_system:
                conv.system = default_system
            for name, ids in encode_feedback(conv, kl_response, template, tokenizer, data_args.cutoff_len).items():
                out[name].append(ids)
            out["kto_tag"].append(tag)
        return out

    tokenized = map_batches(convs, encode_batch, data_args, split)
    kept = drop_unsupervised(tokenized, ["labels"], data_args, split, report)
    desirable = sum(kept["kto_tag"])
    logger.info("%s: %d desirable and %d undesirable samples", split, desirable, len(kept) - desirable)
    return kept


def tokenize_prompts(
    convs: Dataset, data_args: DataArguments, tokenizer, template, *, split: str, report: list[str], packs: bool
) -> Dataset:
    tokenized = map_conversations(convs, data_args, split, ("input_ids", "prompt", "answer", "truncated"),
                                  lambda conv: encode_prompt_row(conv, template, tokenizer, data_args.cutoff_len))
    cut = sum(tokenized["truncated"])
    if cut:
        report.append(f"{split}: {cut} of {len(tokenized)} prompts lost their start to cutoff_len={data_args.cutoff_len}")
        logger.warning("%s", report[-1])
    return tokenized.remove_columns("truncated")


def tokenize_pretrain(
    convs: Dataset, data_args: DataArguments, tokenizer, template, *, split: str, report: list[str], packs: bool
) -> Dataset:
    add_bos = tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id

    def encode_batch(batch):
        texts = [messages[0]["content"] for messages in batch["messages"]]
        return {"ids": tokenize_documents(texts, tokenizer, add_bos)}

    docs = map_batches(convs, encode_batch, data_args, split)
    # Packing runs over the whole token stream in one pass so no tail is cut at map-batch boundaries.
    blocks = (pack_documents if packs else truncate_documents)(docs["ids"], data_args.cutoff_len)
    return Dataset.from_list(list(blocks))


def drop_unsupervised(
    tokenized: Dataset, label_columns: list[str], data_args: DataArguments, split: str, report: list[str]
) -> Dataset:
    """Drop rows whose response was cut away entirely (no label left to learn), counting them in `report`."""
    def has_response(*labels_per_column):
        return all(any(label != IGNORE_INDEX for label in labels[1:]) for labels in labels_per_column)

    kept = tokenized.filter(has_response, input_columns=label_columns, num_proc=data_args.preprocessing_num_workers)
    dropped = len(tokenized) - len(kept)
    if dropped:
        report.append(
            f"{split}: dropped {dropped} of {len(tokenized)} samples with no response token left after truncation "
            f"to cutoff_len={data_args.cutoff_len}"
        )
        logger.warning("%s", report[-1])
    if len(kept) == 0:
        raise DataError(
            f"{split}: every sample lost its response to truncation; raise 'cutoff_len' (now {data_args.cutoff_len})"
        )
    return kept


def rows(batch: dict[str, list]) -> list[dict]:
    """The rows of a batched `Dataset.map` input (a dict of columns)."""
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def map_batches(convs: Dataset, encode_batch, data_args: DataArguments, split: str, desc: str | None = None) -> Dataset:
    """`encode_batch` over the records in the configured batches and processes; only its columns are kept."""
    return convs.map(
        encode_batch,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=convs.column_names,
        desc=desc or f"tokenizing {split}",
    )
