"""Hold out an eval split from the training conversations (`val_size`).

train, eval = split_train_eval(conversations, val_size=0.1, seed=42)   # 10% held out
train, eval = split_train_eval(conversations, val_size=200, seed=42)   # 200 records held out
"""

from __future__ import annotations

import math

from datasets import Dataset

from lmforge.errors import DataError


def split_train_eval(dataset: Dataset, val_size: float | int, seed: int) -> tuple[Dataset, Dataset]:
    """Split `dataset` into (train, eval), drawing the eval records at random with `seed`.

    Args:
        dataset: The merged training conversations.
        val_size: A fraction of the records when < 1, a number of records when >= 1 (as in LLaMA-Factory).
        seed: Seed of the random draw; the same seed gives the same split.

    Raises:
        DataError: `val_size` is not positive, or leaves no training record.
    """
    total = len(dataset)
    if val_size <= 0:
        raise DataError(f"val_size must be positive (a fraction < 1 or a record count), got {val_size}")
    # ceil, as `Dataset.train_test_split` rounds a fractional test_size (so splits match LLaMA-Factory's).
    count = int(val_size) if val_size >= 1 else math.ceil(total * val_size)
    if val_size >= 1 and val_size != int(val_size):
        raise DataError(f"val_size {val_size} is >= 1, so it counts records and must be a whole number")
    if count >= total:
        raise DataError(
            f"val_size {val_size} holds out {count} of {total} records, leaving none to train on; "
            f"lower val_size (a fraction < 1 or a record count below {total})"
        )
    # train_test_split shuffles with the seed, as LLaMA-Factory's split does, so the eval set is a fair sample.
    parts = dataset.train_test_split(test_size=count, seed=seed)
    return parts["train"], parts["test"]
