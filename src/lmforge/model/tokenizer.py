"""Load the tokenizer of a local model directory (or a cached hub id), ready for training batches.

    tokenizer = load_tokenizer(cfg.model)
"""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lmforge.config.model_args import ModelArguments
from lmforge.errors import ModelError
from lmforge.logging import get_logger
from lmforge.model.loader import local_model_dir

logger = get_logger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "vocab.txt",
    "spiece.model",
)
"""Files one of which every saved tokenizer has (fast, config, BPE vocab, sentencepiece, WordPiece)."""


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained` on the local `model_name_or_path`, with a pad token and right padding.

    A missing pad token is set to the eos token (logged): padded positions are masked out of attention
    and labels, so which id fills them does not matter, and reusing eos adds no embedding row. Padding is
    on the right, where the collator and the loss expect it during training (generation code that needs
    left padding sets it on its own copy).

    Raises:
        ModelError: the directory is missing / not local, or holds no loadable tokenizer.
    """
    directory = local_model_dir(model_args.model_name_or_path, model_args.model_revision)  # a hub id: its cached snapshot
    # Checked up front because transformers 5 silently builds an empty tokenizer (one token) for a
    # directory whose config names a model type but which holds no tokenizer files.
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"model_name_or_path: {directory} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save one there with tokenizer.save_pretrained"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            directory,
            use_fast=model_args.use_fast_tokenizer,
            trust_remote_code=model_args.trust_remote_code,
            local_files_only=True,
            padding_side="right",
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model_name_or_path: {directory} has no tokenizer transformers can load ({exc}); "
            "save one with tokenizer.save_pretrained into that directory"
        ) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"model_name_or_path: the tokenizer in {directory} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer has no pad token: using eos %r", tokenizer.eos_token)
    tokenizer.padding_side = "right"
    return tokenizer
