"""Load a local causal LM and set which of its parameters train.

    model = load_model(cfg.model, cfg.adapter, is_trainable=True, gradient_checkpointing=True)
    trainable, total = count_parameters(model)

Steps, in order: check the directory (local, safetensors) -> pick the dtype -> `from_pretrained` ->
activation checkpointing -> the `finetuning_type` adapter from ADAPTERS -> trainable weights to fp32 ->
log `trainable params: N || all params: M || trainable%: x` (when training).

Dtype policy (`torch_dtype`):
    * `auto` keeps the checkpoint's precision where the device runs it: a bf16 checkpoint loads in bf16
      on CPU and on bf16-capable GPUs, an fp16 checkpoint in fp16 on GPUs; everything else in fp32. Half
      formats are never converted into each other (bf16 -> fp16 can overflow).
    * `bf16` / `fp16` / `fp32` are honoured, with one exception: training on CPU always loads fp32.
      Mixed precision on CPU comes from the Trainer's `bf16: true` (autocast) instead; half-precision
      frozen weights save little there, and a half frozen layer feeding an fp32 trainable one (freeze
      tuning) fails without autocast.
    * Whatever trains is kept in fp32 afterwards (LLaMA-Factory does the same): optimizer updates below
      bf16's resolution would otherwise vanish. Frozen weights stay in the loaded dtype, so on a GPU LoRA
      keeps a bf16 base; training then relies on the Trainer's `bf16`/`fp16` autocast. LoRA runs without
      it too (PEFT casts at the adapter), but freeze tuning does not: an fp32 trainable layer fed by a
      half frozen one is a dtype mismatch outside autocast (checked on an H100).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.model_args import ModelArguments
from lmforge.errors import ConfigError, ModelError, did_you_mean
from lmforge.logging import get_logger
from lmforge.model.adapters import ADAPTERS
from lmforge.model.adapters.targets import split_names
from lmforge.config.checkpointing_policy import selective_checkpoint_context
from lmforge.model import varlen_attn as _varlen_attn  # noqa: F401  (importing it registers "varlen_attn")
from lmforge.model.attention import choose_attention  # importing it registers "sdpa_varlen"

logger = get_logger(__name__)

try:  # what huggingface_hub's strict config dataclasses raise for fields that contradict each other
    from huggingface_hub.errors import StrictDataclassError as _InvalidConfigFields
except ImportError:  # older huggingface_hub: those checks do not exist
    _InvalidConfigFields = ValueError

DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
"""`torch_dtype` spellings (LLaMA-Factory's and torch's) -> torch dtypes."""

HALF = (torch.bfloat16, torch.float16)


def load_model(
    model_args: ModelArguments,
    adapter: AdapterArguments,
    *,
    is_trainable: bool,
    gradient_checkpointing: bool = False,
    checkpoint_every_n_layers: int = 1,
    selective_checkpointing: bool = False,
    pure_bf16: bool = False,
) -> nn.Module:
    """Load `model_name_or_path` and apply the `finetuning_type` adapter.

    Args:
        model_args: where the model is and how to load it (dtype, attention, adapters, remote code).
        adapter: the finetuning_type (full | freeze | lora) and its group's keys.
        is_trainable: True to prepare for training; False gives a frozen model in eval mode, with any
            `adapter_name_or_path` adapters merged into it.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant), training only.
        checkpoint_every_n_layers: checkpoint only every n-th decoder layer; the others keep their activations.
        selective_checkpointing: keep matmul and attention outputs, recompute only the ops between them.
        pure_bf16: load in bf16 and train in it (no fp32 copy of the trainable weights), LLaMA-Factory's pure_bf16.

    Returns:
        A `PreTrainedModel`, or a `peft.PeftModel` wrapping one when a LoRA adapter trains.

    Raises:
        ModelError: the directory is missing, not local, or holds only pickled (`.bin`) weights; config.json
            is not JSON or names no known model_type; a safetensors file is empty, truncated or damaged; the
            weights' shapes or names do not fit config.json.
        ConfigError: adapter keys that do not fit this model (unknown module names, layer counts).
    """
    directory = local_model_dir(model_args.model_name_or_path, model_args.model_revision)
    require_safetensors(directory)
    try:
        config = AutoConfig.from_pretrained(
            directory, trust_remote_code=model_args.trust_remote_code, local_files_only=True
        )
    except (ValueError, OSError, TypeError, _InvalidConfigFields) as exc:  # e.g. layer_types vs layer count
        raise ModelError(f"model_name_or_path: {directory / 'config.json'}: transformers cannot build a config "
                         f"from it ({_first_line(exc)}); restore the config.json saved with the model") from None
    dtype = resolve_dtype(
        model_args.torch_dtype, config_dtype(config), device=default_device(), is_trainable=is_trainable
    )
    if pure_bf16:  # LLaMA-Factory's pure_bf16: bf16 weights on any device, trainable ones not upcast below
        dtype = torch.bfloat16
    dtype_name = str(dtype).removeprefix("torch.")
    attention = choose_attention(config, model_args.attention)
    logger.info("loading %s (dtype %s, attention %s)", directory, dtype_name, attention)
    # low_cpu_mem_usage is not passed: transformers 5 always loads without a second copy and ignores it.
    # With these two flags, weights whose shape differs from the config come back as a list (not a RuntimeError
    # pointing at a logged table), and so do weights the config calls for but the files lack (which
    # transformers would otherwise initialise randomly, only logging it); check_weights_fit refuses both.
    quantized = {}
    if adapter.quantization.enabled:  # QLoRA: the frozen base in 4 / 8 bits, computing in `dtype`
        from lmforge.model.quantization import quantized_load_kwargs

        quantized = quantized_load_kwargs(adapter.quantization, dtype, is_trainable=is_trainable)
        logger.info("quantizing %s to %d bit with bitsandbytes (%s)", directory, adapter.quantization.quantization_bit,
                    adapter.quantization.quantization_type if adapter.quantization.quantization_bit == 4 else "int8")
    model, loading = AutoModelForCausalLM.from_pretrained(
        directory,
        config=config,
        dtype=dtype,
        attn_implementation=attention,
        trust_remote_code=model_args.trust_remote_code,
        use_safetensors=True,
        local_files_only=True,
        ignore_mismatched_sizes=True,
        output_loading_info=True,
        **quantized,
    )
    check_weights_fit(directory, loading)
    if is_trainable and gradient_checkpointing:
        enable_checkpointing(model, every_n_layers=checkpoint_every_n_layers, selective=selective_checkpointing)

    apply = ADAPTERS.get(adapter.finetuning_type)
    model = apply(
        model,
        adapter,
        is_trainable=is_trainable,
        adapter_paths=split_names(model_args.adapter_name_or_path),
    )

    if is_trainable:
        if pure_bf16:  # PEFT creates adapter weights in fp32 over a half base; LLaMA-Factory keeps them in bf16 too
            for param in model.parameters():
                if param.requires_grad and param.dtype != torch.bfloat16:
                    param.data = param.data.to(torch.bfloat16)
            logger.info("pure bf16: trainable weights stay in bf16 (no fp32 master copy)")
        else:
            upcast_trainable(model)
        trainable, _ = count_parameters(model)
        if trainable == 0:
            raise ConfigError(
                f"finetuning_type '{adapter.finetuning_type}' left no parameter trainable; check its keys"
            )
        log_parameter_counts(model)  # training only: chat, api, export and predict have nothing trainable to count
    else:
        model.requires_grad_(False)
        model.eval()
    return model


def local_model_dir(model_name_or_path: str | None, revision: str = "main") -> Path:
    """`model_name_or_path` as a local model directory, or a ModelError that says how to get one.

    A hub id (`org/name`) that is not a local path is looked up in the Hugging Face cache at `revision`
    (`model_revision`), offline, where transformers would find it (lmforge.model.hub_cache); lmforge never
    downloads, so an id that is not cached is an error naming the cache folder and the download command.
    """
    from lmforge.config.validate import LOCAL_MODEL_DIRS
    from lmforge.hub_cache import looks_like_hub_id, not_cached_message, resolve_hub_id

    if not model_name_or_path:
        raise ModelError("set 'model_name_or_path' to a local model directory (lmforge create-model makes one)")
    directory = Path(model_name_or_path).expanduser()
    org = model_name_or_path.split("/")[0]
    if not directory.is_dir() and looks_like_hub_id(model_name_or_path) and not Path(org).is_dir() \
            and org.lower() not in LOCAL_MODEL_DIRS:  # models/tiny: a local path that is missing, not an org
        snapshot = resolve_hub_id(model_name_or_path, revision or "main")
        if snapshot is None:
            raise ModelError(not_cached_message("model_name_or_path", model_name_or_path, revision))
        directory = snapshot
    if not directory.is_dir():
        raise ModelError(
            f"model_name_or_path: '{model_name_or_path}' is not a local directory; "
            "for a small random model run `lmforge create-model tiny-qwen2 models/tiny`"
        )
    if not (directory / "config.json").is_file():
        raise ModelError(
            f"model_name_or_path: '{model_name_or_path}' has no config.json, so it is not a Hugging Face model "
            "directory (lmforge create-model makes one)"
        )
    check_model_config(directory)
    return directory


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_model_config(directory: Path) -> None:
    """Refuse a config.json that is not JSON, or whose `model_type` is missing or unknown to transformers.

    transformers reports these as a ValueError about "Unrecognized model" deep in AutoConfig; checked here,
    the message names the file and the value. A config with `auto_map` brings its own code, so its
    model_type is its own business.
    """
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"model_name_or_path: {path} is not valid JSON ({exc}); restore the config.json saved "
                         "with the model") from None
    if not isinstance(config, dict):
        raise ModelError(f"model_name_or_path: {path} holds a JSON {type(config).__name__}, not an object")
    if "auto_map" in config:
        return
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(
            f"model_name_or_path: {path} has no 'model_type', so transformers cannot tell the architecture; add "
            f"the one the model was saved with (e.g. \"model_type\": \"qwen2\" or \"llama\")"
        )
    if model_type not in CONFIG_MAPPING:
        import transformers

        raise ModelError(
            f"model_name_or_path: {path}: model_type '{model_type}' is unknown to transformers "
            f"{transformers.__version__}{did_you_mean(model_type, CONFIG_MAPPING.keys())}; fix the value, or "
            "upgrade transformers if the architecture is newer than it"
        )


def check_weights_fit(directory: Path, loading: dict) -> None:
    """Raise unless every weight the config.json architecture has came from the files, with its shape."""
    mismatched = list(loading.get("mismatched_keys") or [])
    if mismatched:
        name, saved, expected = mismatched[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise ModelError(
            f"model_name_or_path: the weights in {directory} do not fit its config.json: {name} has shape "
            f"{list(saved)} in the files but {list(expected)} by the config{more}; restore the config.json "
            "saved with these weights"
        )
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(
            f"model_name_or_path: the weights in {directory} lack {missing[0]}{more}, which its config.json "
            "calls for (more layers or modules than were saved); restore the config.json saved with these "
            "weights, or the missing weight files"
        )


def check_safetensors_file(path: Path) -> None:
    """Refuse an empty, truncated or non-safetensors weight file by its header, before any tensor is read.

    Layout: an 8-byte little-endian header length, a JSON header giving each tensor's byte range, the data.
    """
    size = path.stat().st_size
    fix = "save or copy the model again"
    if size == 0:
        raise ModelError(f"model_name_or_path: {path} is empty (0 bytes); {fix}")
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little") if size >= 8 else 0
        try:
            if not 2 <= length <= min(size - 8, 100 << 20):  # safetensors caps the header at 100 MB
                raise ValueError
            header = json.loads(handle.read(length))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ModelError(f"model_name_or_path: {path} is not a safetensors file (its header cannot be read; "
                             f"the file is damaged or truncated); {fix}") from None
    if 8 + length + end > size:
        raise ModelError(f"model_name_or_path: {path} is truncated: it has {size:,} bytes, its header describes "
                         f"{8 + length + end:,}; {fix}")


def require_safetensors(directory: Path) -> None:
    """Refuse directories whose weights exist only as pickles (loading a `.bin` can run arbitrary code), and
    safetensors files that are empty, truncated or damaged."""
    weights = sorted(directory.glob("*.safetensors"))
    for path in weights:
        check_safetensors_file(path)
    if weights or any(directory.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for p in directory.glob("*.bin") if p.name != "training_args.bin")
    if pickles:
        raise ModelError(
            f"model_name_or_path: {directory} holds only pickled weights ({', '.join(pickles)}), which can run "
            "code when loaded; convert them once to safetensors (model.save_pretrained(dir, "
            "safe_serialization=True) in a trusted environment)"
        )
    raise ModelError(f"model_name_or_path: {directory} has no model weights (*.safetensors)")


def config_dtype(config) -> torch.dtype | None:
    """The dtype the checkpoint was saved in, from `dtype` (transformers 5) or `torch_dtype` (older)."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        return getattr(torch, value, None) if value != "auto" else None
    return value if isinstance(value, torch.dtype) else None


def default_device() -> str:
    """Where training will run: 'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def supports_bf16(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and torch.cuda.is_bf16_supported())


def resolve_dtype(torch_dtype: str, saved: torch.dtype | None, *, device: str, is_trainable: bool) -> torch.dtype:
    """The dtype to load weights in (policy in the module docstring).

    Args:
        torch_dtype: the `torch_dtype` key: auto, bf16, fp16, fp32 (or bfloat16, float16, float32).
        saved: the checkpoint's dtype from its config (None when unknown).
        device: 'cuda' or 'cpu'.
        is_trainable: whether the model will be trained.
    """
    if torch_dtype == "auto":
        if saved == torch.bfloat16 and supports_bf16(device):
            dtype = torch.bfloat16
        elif saved == torch.float16 and device == "cuda":
            dtype = torch.float16
        else:
            dtype = torch.float32
    elif torch_dtype in DTYPES:
        dtype = DTYPES[torch_dtype]
    else:
        raise ConfigError(f"torch_dtype: '{torch_dtype}' is not one of auto, {', '.join(DTYPES)}")
    if is_trainable and device == "cpu" and dtype in HALF:
        logger.info("training on CPU: loading fp32 weights; set bf16: true for bf16 autocast")
        return torch.float32
    return dtype


def enable_checkpointing(model: PreTrainedModel, every_n_layers: int = 1, selective: bool = False) -> None:
    """Non-reentrant activation checkpointing; the KV cache is off since nothing reuses it in training.

    Non-reentrant checkpointing computes gradients for frozen-input segments correctly, and transformers
    additionally makes the input embeddings' output require grad (`enable_input_require_grads`) so LoRA /
    freeze tuning with frozen embeddings still backpropagates through every checkpointed layer.
    """
    if not model.supports_gradient_checkpointing:
        raise ConfigError(f"gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
    kwargs = {"use_reentrant": False}
    if selective:
        kwargs["context_fn"] = selective_checkpoint_context
    if hasattr(model, "activation_checkpointing_enable"):  # the name in recent transformers 5 releases
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers)
    if not getattr(model, "_require_grads_hooks", None):  # transformers 5 registers it itself; never twice
        model.enable_input_require_grads()
    model.config.use_cache = False
    which = "every layer" if every_n_layers == 1 else f"every {every_n_layers}th layer"
    logger.info("activation checkpointing on (non-reentrant, %s%s)", which, ", selective" if selective else "")


def upcast_trainable(model: nn.Module) -> None:
    """Cast every trainable parameter to fp32 in place (tied weights stay tied: the Parameter is shared)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in HALF:
            param.data = param.data.float()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once.

    Under PEFT the total includes the adapters and, for `modules_to_save`, both the frozen original and
    its trainable copy — what PEFT's own `print_trainable_parameters` reports.
    """
    trainable = total = 0
    for param in model.parameters():
        # DeepSpeed ZeRO-3 loads weights already partitioned: each holds an empty tensor and its size in ds_numel
        size = getattr(param, "ds_numel", None) or param.numel()
        total += size
        if param.requires_grad:
            trainable += size
    return trainable, total


def log_parameter_counts(model: nn.Module) -> None:
    trainable, total = count_parameters(model)
    logger.info(
        "trainable params: %s || all params: %s || trainable%%: %.4f",
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )
