"""Create a new, randomly initialised model and its tokenizer from a named preset, with no downloads.

    lmforge create-model tiny-qwen2 models/tiny-qwen2 --seed 0 --set num_hidden_layers=4

    from lmforge.model.from_config import create_model
    path = create_model("tiny-llama", tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(path)

The directory looks like a real Hugging Face checkpoint (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json with the chat template), so every test and the demo
load it through the ordinary `from_pretrained` paths.

Presets mirror the token conventions of the models they are named after (ids with the default 1024 vocab):

- `tiny-qwen2`: like Qwen2-Instruct. ChatML template (no default system prompt); eos `<|im_end|>` 1023
  (where a chat reply ends, so generation stops there), pad `<|endoftext|>` 1021, no bos;
  `<|im_start|>` 1022. generation_config stops on either eos. AutoTokenizer reloads it as transformers'
  `Qwen2Tokenizer`, which tokenizes identically (see new_tokenizer.SPLIT_PATTERN).
- `tiny-llama`: like Llama-3-Instruct. bos `<|begin_of_text|>` 1020, prepended by `encode` and written by
  the template (so `apply_chat_template`, which encodes without special tokens, has it once); eos
  `<|eot_id|>` 1023; pad `<|endoftext|>` 1019 (Llama 3 has no pad token; a distinct one keeps padding
  apart from eos); `<|start_header_id|>` 1021, `<|end_header_id|>` 1022. The template trims message
  contents, as Llama 3's does. After reloading, transformers 5 reports `tokenizer.add_bos_token == False`
  (save_pretrained drops the flag) yet still prepends bos: the rule lives in tokenizer.json's
  post-processor, as for the real Llama 3.
- `tiny-<family>` (qwen3, qwen3-moe, mistral, mixtral, gemma2, gemma3, phi3, olmo2, granite, gpt-neox, smollm3,
  deepseek-v3): each family's own config fields, 2 layers x 64 wide, with the tiny-qwen2 ChatML tokenizer; the
  architecture matrix of tests/model/test_architectures.py (presets.FAMILY_CONFIGS says what each activates).
- `small-qwen2`: 56.4M parameters (32.8M of them in the untied embedding and lm_head, 32,000 rows each)
  for speed benchmarks; ChatML like tiny-qwen2, saved in bfloat16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from lmforge.errors import ConfigError, UserError, did_you_mean
from lmforge.logging import get_logger
from lmforge.model.new_tokenizer import build_tokenizer
from lmforge.model.presets import PRESETS

logger = get_logger(__name__)

ASSETS = Path(__file__).parent / "assets"

# Files a previous save may have left that would shadow what create_model writes: a chat_template.jinja
# wins over tokenizer_config.json's template, an index or a .bin would be loaded instead of our weights.
_SHADOWING_FILES = (
    "chat_template.jinja",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)

_DTYPES = ("float32", "bfloat16", "float16")

# Config keys that describe the file rather than the model; the preset decides them.
_NOT_OVERRIDABLE = ("model_type", "architectures", "transformers_version", "_name_or_path")


def build_preset_tokenizer(preset: str) -> PreTrainedTokenizerFast:
    """The tokenizer `create_model(preset, ...)` saves, without building a model."""
    spec = PRESETS.get(preset)
    return build_tokenizer(
        vocab_size=spec.tokenizer_vocab_size,
        special_tokens=list(spec.special_tokens),
        # Without the file's final newline, so the stored template renders the same in any Jinja setup.
        chat_template=(ASSETS / spec.chat_template).read_text(encoding="utf-8").rstrip("\n"),
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        bos_token=spec.bos_token,
        add_bos_token=spec.add_bos_token,
        model_max_length=spec.config["max_position_embeddings"],
    )


def build_config(
    preset: str, tokenizer: PreTrainedTokenizerFast, overrides: dict[str, Any] | None = None
) -> PretrainedConfig:
    """The preset's model config, sized to `tokenizer`, with `overrides` applied and checked.

    Raises:
        ConfigError: an override names no config field, has the wrong type, or makes the shape impossible.
    """
    spec = PRESETS.get(preset)
    fields = dict(spec.config)
    fields["vocab_size"] = max(
        spec.model_vocab_size or 0, _round_up(len(tokenizer), spec.pad_vocab_to_multiple_of)
    )
    fields.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=spec.dtype,
    )
    # transformers configs accept any keyword silently, so known fields come from a default instance.
    known = AutoConfig.for_model(spec.model_type).to_dict()
    for fixed in _NOT_OVERRIDABLE:
        known.pop(fixed, None)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"unknown config field '{key}' for preset '{preset}'{did_you_mean(key, known)}")
        fields[key] = _coerce(key, value, fields.get(key, known[key]))
    if fields["dtype"] not in _DTYPES:
        raise ConfigError(
            f"config field 'dtype' must be one of {', '.join(_DTYPES)}, got {fields['dtype']!r}"
        )
    config = AutoConfig.for_model(spec.model_type, **fields)
    _check_shape(config, len(tokenizer))
    return config


def create_model(
    preset: str,
    output_dir: str | Path,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a randomly initialised model and its tokenizer to `output_dir`.

    The same preset, seed and overrides always give bit-identical weights (initialised on CPU right
    after `torch.manual_seed(seed)`).

    Args:
        preset: A name in `PRESETS` (`tiny-qwen2`, `tiny-llama`, `small-qwen2`).
        output_dir: Directory to create; it must not exist or be empty unless `overwrite`.
        seed: Seed of the random initialisation.
        overrides: Config fields to change, e.g. `{"num_hidden_layers": 4}`.
        overwrite: Write into a non-empty directory, replacing files of the same names.

    Returns:
        `output_dir` as a Path.

    Raises:
        ConfigError: unknown preset, or a bad override.
        UserError: `output_dir` is a file, or a non-empty directory without `overwrite`.
    """
    output_dir = Path(output_dir)
    _check_output_dir(output_dir, overwrite)
    spec = PRESETS.get(preset)
    tokenizer = build_preset_tokenizer(preset)
    config = build_config(preset, tokenizer, overrides)

    tokenizer.model_max_length = config.max_position_embeddings  # follows an override
    saved_dtype = config.dtype

    torch.manual_seed(seed)
    # Initialise in float32 on CPU, whatever the saved dtype: the same numbers on every machine.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(saved_dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(list(spec.stop_tokens)),
        pad_token_id=tokenizer.pad_token_id,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    for name in _SHADOWING_FILES:
        (output_dir / name).unlink(missing_ok=True)
    model.save_pretrained(output_dir)
    # save_jinja_files=False keeps the chat template inside tokenizer_config.json, where every
    # transformers version (and LLaMA-Factory) looks, instead of a separate chat_template.jinja.
    tokenizer.save_pretrained(output_dir, save_jinja_files=False)

    n_params = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    logger.info(
        f"created {preset} in {output_dir}: {n_params:,} parameters, {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}, vocab {config.vocab_size} ({len(tokenizer)} tokenizer ids), "
        f"{str(saved_dtype).removeprefix('torch.')}, seed {seed}"
    )
    return output_dir


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check an override against the type of the value it replaces; ints may stand in for floats."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"config field '{key}' expects {type(default).__name__} (like {default!r}), got {value!r}"
        )
    return value


def _check_shape(config: PretrainedConfig, n_tokens: int) -> None:
    """Catch shapes that would otherwise fail deep inside the model with a bare matrix-size error."""
    # getattr: GPT-NeoX style configs have no num_key_value_heads (every head has its own keys and values).
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    if getattr(config, "head_dim", None) is None and config.hidden_size % heads:
        raise ConfigError(f"hidden_size={config.hidden_size} is not divisible by num_attention_heads={heads}")
    if kv_heads and heads % kv_heads:
        raise ConfigError(f"num_attention_heads={heads} is not divisible by num_key_value_heads={kv_heads}")
    if config.vocab_size < n_tokens:
        raise ConfigError(f"vocab_size={config.vocab_size} is smaller than the tokenizer's {n_tokens} ids")


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.is_file():
        raise UserError(f"output directory {output_dir} is a file")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise UserError(
            f"output directory {output_dir} is not empty; choose another or pass --overwrite (overwrite=True)"
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
