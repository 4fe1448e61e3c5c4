"""Tokenization by data kind: the registry `build_datasets` picks a stage's processor from.

    processor = processor_for(STAGES.get("dpo"))     # the "pairwise" entry
    processor.ranking                                # True: rows are chosen/rejected pairs
    train = processor.tokenize(convs, data_args, tokenizer, template, split="train", report=[], packs=False)

A stage names its data kind (`Stage.data_kind`); the entry for that kind says how the loader reads records
(ranking pairs? a kto_tag per record? records without a response?) and how rows become token ids. A kind no
entry handles is an error, never a fallback to some other tokenization. The one-record functions live in
`pretrain`, `supervised`, `pairwise`, `feedback`, `prompts` (and `generation`, which predict uses); `tokenizing` maps
them over datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge.data.processors.tokenizing import (
    tokenize_feedback,
    tokenize_pairwise,
    tokenize_pretrain,
    tokenize_prompts,
    tokenize_supervised,
)
from lmforge.errors import ConfigError, did_you_mean
from lmforge.registry import Registry

if TYPE_CHECKING:
    from lmforge.stages import Stage


@dataclass(frozen=True)
class Processor:
    kind: str
    """The data kind it handles (a `Stage.data_kind`)."""
    tokenize: Callable
    """(rows, data_args, tokenizer, template, *, split, report, packs) -> tokenized `datasets.Dataset`."""
    ranking: bool = False
    """Reads ranking datasets (dataset_info `"ranking": true`): rows are chosen/rejected pairs."""
    tagged: bool = False
    """Each record carries a true/false label (`columns.kto_tag`), kept as the row's `kto_tag`."""
    allows_empty_response: bool = False
    """A record without a response is still a sample (documents, prompts)."""


PROCESSORS: Registry[Processor] = Registry("data kind")

for _processor in (
    Processor("text", tokenize_pretrain, allows_empty_response=True),
    Processor("conversation", tokenize_supervised),
    Processor("pairwise", tokenize_pairwise, ranking=True),
    Processor("feedback", tokenize_feedback, tagged=True),
    Processor("prompt", tokenize_prompts, allows_empty_response=True),
):
    PROCESSORS.add(_processor.kind, _processor)


def processor_for(stage: Stage) -> Processor:
    """The processor of `stage`'s data kind; a kind without one is an error naming the kinds there are."""
    if stage.data_kind not in PROCESSORS:
        kinds = PROCESSORS.names()
        raise ConfigError(
            f"stage '{stage.name}' reads data kind '{stage.data_kind}', which no processor handles"
            f"{did_you_mean(stage.data_kind, kinds)}; known data kinds: {', '.join(kinds)} (register one in "
            "lmforge.data.processors.PROCESSORS)"
        )
    return PROCESSORS.get(stage.data_kind)
