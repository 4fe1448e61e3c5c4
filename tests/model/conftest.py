"""Tiny real artifacts for the model tests, loaded back through the real `from_pretrained`.

The main model is the `tiny-qwen2` preset of `lmforge.model.from_config`; variants the preset does not
offer (a bf16 checkpoint, a directory without a tokenizer, a tokenizer without a pad token) are built
here from an equivalent Qwen2Config. Tests compute expected parameter counts from each saved config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

TINY_QWEN2 = {
    "vocab_size": 320,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 176,
    "tie_word_embeddings": True,
    "max_position_embeddings": 256,
}


def build_tiny_qwen2(directory: Path, dtype: torch.dtype = torch.float32) -> Path:
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2)).to(dtype)
    model.save_pretrained(directory)
    return directory


def train_tokenizer(directory: Path, *, with_pad: bool) -> Path:
    """A byte-level BPE tokenizer trained on the spot, saved as a PreTrainedTokenizerFast.

    Byte-level BPE because transformers 5 loads the tokenizer of a `model_type: qwen2` directory as
    Qwen2Tokenizer, which rebuilds a byte-level BPE from the saved vocab and merges (a WordLevel vocab
    would then encode every text to no tokens).
    """
    texts = ["the quick brown fox jumps over the lazy dog", "hello world", "lmforge trains tiny models"] * 4
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<unk>", "<eos>"] + (["<pad>"] if with_pad else [])
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<eos>",
        pad_token="<pad>" if with_pad else None,
        padding_side="left",  # load_tokenizer must switch it to right
    )
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    """The `tiny-qwen2` preset (fp32 safetensors, tied embeddings, ChatML tokenizer with its own pad)."""
    from lmforge.model.from_config import create_model

    return create_model("tiny-qwen2", tmp_path_factory.mktemp("model") / "tiny-qwen2", seed=0)


@pytest.fixture(scope="session")
def tiny_config(tiny_qwen2_dir) -> dict:
    return json.loads((tiny_qwen2_dir / "config.json").read_text())


@pytest.fixture(scope="session")
def tiny_bf16_dir(tmp_path_factory) -> Path:
    """The same architecture saved in bf16, so `torch_dtype: auto` has a half-precision checkpoint to keep."""
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2-bf16"), torch.bfloat16)


@pytest.fixture(scope="session")
def model_with_tokenizer_dir(tmp_path_factory) -> Path:
    """A model directory whose tokenizer has an eos but no pad token, padding on the left."""
    directory = tmp_path_factory.mktemp("tiny-with-tokenizer")
    build_tiny_qwen2(directory)
    return train_tokenizer(directory, with_pad=False)
