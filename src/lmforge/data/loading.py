"""Dataset names -> one `datasets.Dataset` of normalised conversations, with drops counted per dataset.

    dataset, drops = load_conversations(["alpaca_en_demo", "identity"], "data", stage="sft",
                                        placeholders={"name": "Forge", "author": "lmforge"})
    Conversation.from_dict(dataset[0])

Per dataset: read its files, check that the columns its entry names exist, sample (`num_samples`), truncate
(`max_samples`), convert each record with its format (records that cannot become a sample are dropped and
counted by reason), then merge the datasets (concat or interleave). Rows are `Conversation.to_dict()`;
ranking rows are `pair_to_dict` (prompt_messages, system, tools, chosen, rejected); kto rows add `kto_tag`.
"""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset, Features, Value, concatenate_datasets, interleave_datasets

from lmforge.data.dataset_info import DatasetSpec, resolve_datasets
from lmforge.data.formats import InvalidRecord, convert_record, pair_to_dict
from lmforge.data.processors import PROCESSORS, Processor, processor_for
from lmforge.data.sources import read_records
from lmforge.errors import ConfigError, DataError, did_you_mean
from lmforge.logging import get_logger
from lmforge.stages import STAGES
from lmforge.types import DropCounter, PairSample

logger = get_logger(__name__)

MIX_STRATEGIES = {
    "concat": None,
    "interleave_under": "first_exhausted",
    "interleave_over": "all_exhausted",
    "interleave_once": "all_exhausted_without_replacement",
}
"""`mix_strategy` -> `datasets.interleave_datasets` stopping strategy (LLaMA-Factory's names)."""

_MESSAGE = {"role": Value("string"), "content": Value("string")}
# Explicit features so every dataset gets the same schema, which concat and interleave require.
CONVERSATION_FEATURES = Features({"messages": [_MESSAGE], "system": Value("string"), "tools": Value("string")})
PAIR_FEATURES = Features(
    {
        "prompt_messages": [_MESSAGE],
        "system": Value("string"),
        "tools": Value("string"),
        "chosen": _MESSAGE,
        "rejected": _MESSAGE,
    }
)


def load_conversations(
    names: list[str],
    dataset_dir: str | None,
    *,
    stage: str,
    max_samples: int | None = None,
    mix_strategy: str = "concat",
    interleave_probs: list[float] | None = None,
    seed: int = 42,
    placeholders: dict[str, str] | None = None,
    allow_empty_response: bool | None = None,
) -> tuple[Dataset, list[DropCounter]]:
    """Load, convert and merge the named datasets.

    Args:
        names: dataset_info.json entries or data file paths (see `resolve_datasets`).
        dataset_dir: Folder holding dataset_info.json.
        stage: Training stage; its data kind (`Stage.data_kind`) says what records must hold: ranking data
            (pairwise), a kto_tag column (feedback), or maybe no response at all (text).
        max_samples: Keep at most this many records of each dataset (its first ones, after `num_samples`).
        mix_strategy: concat, interleave_under (stop when one dataset runs out), interleave_over (until all
            ran out, repeating the shorter) or interleave_once (until all ran out, each record once).
        interleave_probs: Sampling probability of each dataset when interleaving (default: equal turns).
        seed: Seed of `num_samples` sampling and interleaving.
        placeholders: Values for `{{key}}` placeholders in messages and system prompts.
        allow_empty_response: Keep records without a response; default: as the stage's data kind allows.

    Returns:
        The merged dataset and one `DropCounter` per dataset, in the order of `names`.

    Raises:
        DataError: a dataset is missing or malformed, lacks a configured column, loses every record, or
            does not fit the stage.
        ConfigError: `mix_strategy` or `interleave_probs` is invalid.
    """
    if not names:
        raise DataError("no dataset given; set 'dataset' to dataset_info.json entries or data file paths")
    if mix_strategy not in MIX_STRATEGIES:
        raise ConfigError(
            f"unknown mix_strategy '{mix_strategy}'{did_you_mean(mix_strategy, MIX_STRATEGIES)}; "
            f"choose one of: {', '.join(MIX_STRATEGIES)}"
        )
    specs = resolve_datasets(names, dataset_dir)
    check_stage(specs, stage)
    kind = data_kind_of(stage)
    if allow_empty_response is None:
        allow_empty_response = kind.allows_empty_response
    parts, drops = [], []
    for spec in specs:
        rows, counter = _load_one(spec, max_samples, seed, placeholders, allow_empty_response, withkto_tag=kind.tagged)
        parts.append(Dataset.from_list(rows, features=_features(spec, kind)))
        drops.append(counter)
    return _merge(parts, mix_strategy, interleave_probs, seed), drops


def data_kind_of(stage: str) -> Processor:
    """What the loader must know of `stage`'s data: the processor entry of its data kind."""
    return processor_for(STAGES.get(stage))


def check_stage(specs: list[DatasetSpec], stage: str) -> None:
    """Raise unless the datasets hold the kind of data `stage` reads (ranking pairs, kto tags)."""
    kind = data_kind_of(stage)
    ranking = [s.name for s in specs if s.ranking]
    single = [s.name for s in specs if not s.ranking]
    if ranking and single:
        raise DataError(
            f"cannot mix ranking datasets ({', '.join(ranking)}) with single-response datasets "
            f"({', '.join(single)}); train them in separate stages"
        )
    if kind.ranking and single:
        raise DataError(
            f"stage '{stage}' trains on ranking data, but dataset '{single[0]}' has none; use a dataset whose "
            f'dataset_info.json entry sets "ranking": true with chosen and rejected columns'
        )
    if not kind.ranking and ranking:
        raise DataError(
            f"dataset '{ranking[0]}' is ranking data (chosen/rejected), which stage '{stage}' cannot use; "
            f"use it with stage {' or '.join(_ranking_stages())}"
        )
    if kind.tagged:
        for spec in specs:
            if spec.columns.kto_tag is None:
                raise DataError(
                    f"stage '{stage}' needs a true/false label per record; set columns.kto_tag in the "
                    f"dataset_info.json entry of '{spec.name}'"
                )


def _load_one(
    spec: DatasetSpec,
    max_samples: int | None,
    seed: int,
    placeholders: dict[str, str] | None,
    allow_empty_response: bool,
    withkto_tag: bool,
) -> tuple[list[dict[str, Any]], DropCounter]:
    records = [record for path in spec.paths for record in read_records(path)]
    if not records:
        raise no_records(spec)
    present = check_columns(spec, records)
    indices = _sample(len(records), spec.num_samples, seed)
    if max_samples is not None:
        indices = indices[:max_samples]  # LLaMA-Factory truncates each dataset, after num_samples

    counter = DropCounter(spec.name)
    rows = []
    for index in indices:
        record = records[index]
        try:
            sample = convert_record(record, spec, placeholders=placeholders, allow_empty_response=allow_empty_response)
            row = pair_to_dict(sample) if isinstance(sample, PairSample) else sample.to_dict()
            if withkto_tag:
                row["kto_tag"] = kto_tag(record, spec.columns.kto_tag)
        except InvalidRecord as err:
            counter.drop(err.reason, index)
            continue
        rows.append(row)

    if not rows:
        fix = (
            f"Check 'formatting' and 'columns' of '{spec.name}' in {spec.source}"
            if spec.source
            else "A bare data file is read with the default field names; for other names, add an entry for it "
            "with 'columns' to dataset_info.json"
        )
        raise DataError(
            f"{counter.summary()}: none left. {fix} (formatting {spec.formatting}; "
            f"the file's fields are: {', '.join(sorted(present))})"
        )
    if counter.total:
        logger.warning(drop_report(counter))
    logger.info("dataset '%s': %d samples (%s)", spec.name, len(rows), spec.formatting)
    return rows, counter


def no_records(spec: DatasetSpec) -> DataError:
    """The error for a dataset whose files hold no record (`train` and `data validate` raise the same)."""
    return DataError(f"dataset '{spec.name}': {', '.join(spec.paths)} holds no records")


def drop_report(counter: DropCounter) -> str:
    """The warning that reports one dataset's dropped records (repeated when the tokenized cache is reused)."""
    return f"{counter.summary()} (record numbers count from 0, in file order)"


def check_columns(spec: DatasetSpec, records: list[dict[str, Any]]) -> set[str]:
    """Raise unless each column the entry names explicitly exists; return the fields the file has."""
    present: set[str] = set()
    for record in records:
        present.update(record)
    for key in spec.configured_columns:
        column = getattr(spec.columns, key)
        if column not in present:
            hint = did_you_mean(column, present) or f" (the file's fields are: {', '.join(sorted(present))})"
            raise DataError(
                f"dataset '{spec.name}': columns.{key} names field '{column}', which {', '.join(spec.paths)} "
                f"does not have{hint}; fix the entry{f' in {spec.source}' if spec.source else ''}"
            )
    return present


def _sample(total: int, num_samples: int | None, seed: int) -> list[int]:
    """Record indices: all in order, or `num_samples` drawn as LLaMA-Factory draws them, but seeded.

    Every record is used once before any repeats: a permutation, topped up with random picks when
    num_samples exceeds the dataset.
    """
    if num_samples is None:
        return list(range(total))
    rng = random.Random(seed)
    indices = rng.sample(range(total), min(num_samples, total))
    indices += [rng.randrange(total) for _ in range(num_samples - len(indices))]
    return indices


def kto_tag(record: dict[str, Any], column: str | None) -> bool:
    tag = record.get(column) if column else None
    if not isinstance(tag, bool):
        raise InvalidRecord("kto_tag is not true/false")
    return tag


def _ranking_stages() -> list[str]:
    """The stages that read ranking data, by name (for messages)."""
    return sorted(name for name in STAGES
                  if STAGES.get(name).data_kind in PROCESSORS and data_kind_of(name).ranking)


def _features(spec: DatasetSpec, kind: Processor) -> Features:
    features = PAIR_FEATURES if spec.ranking else CONVERSATION_FEATURES
    if kind.tagged:
        features = Features({**features, "kto_tag": Value("bool")})
    return features


def _merge(parts: list[Dataset], mix_strategy: str, probs: list[float] | None, seed: int) -> Dataset:
    if len(parts) == 1:
        return parts[0]
    if mix_strategy == "concat":
        return concatenate_datasets(parts)
    if probs is not None:
        if len(probs) != len(parts):
            raise ConfigError(
                f"interleave_probs has {len(probs)} values for {len(parts)} datasets; give one per dataset"
            )
        if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ConfigError(f"interleave_probs must be non-negative and sum to 1, got {probs}")
    return interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=MIX_STRATEGIES[mix_strategy])
