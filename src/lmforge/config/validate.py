"""Every cross-field rule of a run config, each a named function whose message cites the keys.

Rules that need the model or tokenizer (a `lora_target` the model lacks, a template the tokenizer cannot
serve) run where those are loaded, still before training starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.config.averaging_rules import check_ema
from lmforge.config.rl_rules import check_rl
from lmforge.errors import ConfigError, did_you_mean
from lmforge.stages import STAGES, stages_with

if TYPE_CHECKING:
    from lmforge.config.loader import RunConfig



def validate_keys(raw: dict[str, Any], known: dict[str, str], source: str) -> None:
    """Every key lmforge does not take, reported at once: typos (with a suggestion only when genuinely close)
    and LLaMA-Factory options not supported yet. A LLaMA-Factory key left at its default passes."""
    from lmforge.config.compat import ACCEPTED_UNUSED, unknown_key_message

    names = list(known)
    lines = [line for key, value in raw.items() if key not in known and key not in ACCEPTED_UNUSED
             if (line := unknown_key_message(key, value, names)) is not None]
    if not lines:
        return
    where = f"{source}: " if source else ""
    if len(lines) == 1:
        raise ConfigError(where + lines[0])
    raise ConfigError(f"{where}{len(lines)} keys are not accepted:\n  " + "\n  ".join(lines))


def check_choices(cfg: RunConfig) -> None:
    # Keys typed as a Literal (finetuning_type, mix_strategy, torch_dtype, pref_loss, ...) are checked when the
    # config is read (loader._coerce); the stage is a registry name.
    for key, value, choices in (
        ("stage", cfg.finetuning.stage, tuple(STAGES)),  # registered `Stage` specs, built-ins first
    ):
        if value not in choices:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def check_model_given(cfg: RunConfig) -> None:
    if not cfg.model.model_name_or_path:
        raise ConfigError("set 'model_name_or_path' to a local model directory (lmforge create-model makes one)")


def check_datasets_given(cfg: RunConfig) -> None:
    if cfg.training.do_train and not (cfg.data.dataset_names or cfg.data.memmap_dirs):
        raise ConfigError("set 'dataset' (a dataset_info.json entry or a data file) to train on")


def check_memmap(cfg: RunConfig) -> None:
    data = cfg.data
    if not (data.memmap_dirs or data.eval_memmap_dirs or data.isolate_documents):
        return
    if not STAGES.get(cfg.finetuning.stage).reads_memmap:
        raise ConfigError(
            f"'memmap_path'/'eval_memmap_path'/'isolate_documents' are for stage "
            f"{' or '.join(stages_with(reads_memmap=True))}, not '{cfg.finetuning.stage}'"
        )
    if data.memmap_dirs and data.dataset_names:
        raise ConfigError("set either 'dataset' or 'memmap_path', not both")
    if data.eval_memmap_dirs and (data.val_size or data.eval_dataset_names):
        raise ConfigError("set either 'eval_memmap_path' or 'val_size'/'eval_dataset', not both")
    if data.eval_memmap_dirs and not data.memmap_dirs:
        raise ConfigError("'eval_memmap_path' needs 'memmap_path' for the training data")
    if data.isolate_documents and not data.memmap_dirs:
        raise ConfigError("'isolate_documents' applies to 'memmap_path' chunks; set 'memmap_path'")
    if data.packing is False and data.memmap_dirs:
        raise ConfigError("'memmap_path' chunks are always cutoff_len long; remove 'packing: false'")


def check_packing_stage(cfg: RunConfig) -> None:
    packs, stage = cfg.data.packs, STAGES.get(cfg.finetuning.stage)
    if packs and not stage.can_pack:
        raise ConfigError(
            f"'packing'/'neat_packing' cannot be used with stage '{stage.name}': "
            f"only {', '.join(stages_with(can_pack=True))} pack samples"
        )
    if cfg.data.neat_packing and not stage.isolates_packed:
        raise ConfigError(f"'neat_packing' is for stage {' or '.join(stages_with(isolates_packed=True))}; "
                          f"stage {stage.name} packs its rows as one stream ('packing')")


def check_eval_source(cfg: RunConfig) -> None:
    if cfg.data.val_size and cfg.data.eval_dataset_names:
        raise ConfigError("set either 'val_size' or 'eval_dataset', not both")
    strategy = str(getattr(cfg.training.eval_strategy, "value", cfg.training.eval_strategy))
    if strategy != "no" and not (cfg.data.val_size or cfg.data.eval_dataset_names or cfg.data.eval_memmap_dirs):
        raise ConfigError(
            f"'eval_strategy: {strategy}' needs eval data: set 'val_size', 'eval_dataset' or 'eval_memmap_path'"
            + (" (without them, eval_tasks are scored at the end of training only)" if cfg.evaluators.eval_tasks else "")
        )


def check_adapter_keys(cfg: RunConfig) -> None:
    ft, lora = cfg.finetuning, cfg.lora
    if cfg.model.adapter_name_or_path and ft.finetuning_type != "lora":
        raise ConfigError(
            f"'adapter_name_or_path' loads a LoRA adapter but 'finetuning_type' is '{ft.finetuning_type}': "
            "set finetuning_type: lora (or export a merged model first)"
        )
    if lora.use_dora and lora.use_rslora:
        raise ConfigError("'use_dora' and 'use_rslora' cannot both be true")


def check_adapter_variants(cfg: RunConfig) -> None:
    """LoRA+, PiSSA and LLaMA Pro (LLaMA-Factory's rules): each needs its finetuning_type; PiSSA decomposes
    full-precision weights, so not a quantized base nor ZeRO-3-sharded ones, and not beside a reference model."""
    ft, lora = cfg.finetuning.finetuning_type, cfg.lora
    if lora.loraplus_lr_ratio is not None:
        if ft != "lora":
            raise ConfigError(f"'loraplus_lr_ratio' sets LoRA+'s B-matrix learning rate; it needs finetuning_type: "
                              f"lora (it is '{ft}')")
        if lora.loraplus_lr_ratio <= 0:
            raise ConfigError(f"loraplus_lr_ratio: {lora.loraplus_lr_ratio} must be > 0 (LoRA+ suggests 16)")
        if cfg.optimizers.name is not None:
            # LoRA+ only regroups the parameters of `optim`; the use_* optimizers build their own groups
            raise ConfigError(f"'loraplus_lr_ratio' sets the learning rates of `optim`'s parameter groups and "
                              f"cannot be combined with use_{cfg.optimizers.name}; remove one of them")
    if lora.pissa_init:
        if ft != "lora":
            raise ConfigError(f"'pissa_init' initialises a LoRA adapter; it needs finetuning_type: lora (it is '{ft}')")
        if cfg.quantization.enabled:
            raise ConfigError("pissa_init: PiSSA decomposes the full-precision weights and cannot start on a quantized "
                              "base; remove quantization_bit (or pissa_init)")
        if "zero3" in str(cfg.training.deepspeed or "").lower():
            raise ConfigError("pissa_init: PiSSA needs each whole weight for its SVD, which DeepSpeed ZeRO-3 shards; "
                              "use ZeRO-2 or remove pissa_init")
        if cfg.model.adapter_name_or_path and not lora.create_new_adapter:
            raise ConfigError("pissa_init: the adapter in adapter_name_or_path keeps its own initialisation; remove "
                              "pissa_init, or set create_new_adapter: true to start a PiSSA adapter on top")
        stage = cfg.finetuning.stage
        if STAGES.get(stage).uses_reference and cfg.preference.pref_loss not in ("orpo", "simpo"):
            # the reference is the base with the adapter switched off, and PiSSA has replaced the base's weights
            # by their residuals (LLaMA-Factory refuses it too)
            raise ConfigError(f"pissa_init: stage '{stage}' scores against the base as a reference model, which "
                              "PiSSA's residual weights no longer are; remove pissa_init (or use pref_loss orpo/simpo)")
    if lora.pissa_iter < -1 or lora.pissa_iter == 0:
        raise ConfigError(f"pissa_iter: {lora.pissa_iter}; use a positive number of fast-SVD iterations, or -1 "
                          "for the exact SVD")
    if lora.pissa_convert and not lora.pissa_init:
        raise ConfigError("'pissa_convert' converts a PiSSA adapter; set pissa_init: true as well")
    if cfg.freeze.use_llama_pro:
        if ft != "freeze":
            raise ConfigError(f"'use_llama_pro' trains only the expanded blocks through freeze tuning; set "
                              f"finetuning_type: freeze (it is '{ft}')")
        if cfg.freeze.freeze_trainable_layers <= 0:
            raise ConfigError(f"use_llama_pro: freeze_trainable_layers ({cfg.freeze.freeze_trainable_layers}) is the "
                              "number of blocks the model was expanded with; set it to that positive number")


def check_quantization(cfg: RunConfig) -> None:
    """QLoRA's rules (LLaMA-Factory's, with its messages' substance): LoRA on the quantized base, bitsandbytes
    only, one device per process while training, no DeepSpeed ZeRO-3 / FSDP for an 8-bit base."""
    quant = cfg.quantization
    if not quant.enabled:
        return
    if quant.quantization_method != "bnb":
        raise ConfigError(f"quantization_method: {quant.quantization_method!r} is not supported yet; use bnb "
                          "(bitsandbytes)")
    if cfg.finetuning.finetuning_type != "lora":
        raise ConfigError(f"quantization_bit: a quantized base trains only through an adapter; set finetuning_type: "
                          f"lora (it is '{cfg.finetuning.finetuning_type}'), or remove quantization_bit")
    if cfg.lora.create_new_adapter and cfg.model.adapter_name_or_path:
        raise ConfigError("create_new_adapter: a quantized base takes one adapter; merge the existing one first "
                          "with lmforge export")
    if quant.quantization_device_map == "auto" and cfg.training.do_train:
        raise ConfigError("quantization_device_map: auto spreads a model for inference; training keeps the model "
                          "on one device per process (remove the key)")
    sharded = bool(cfg.training.fsdp) or "zero3" in str(cfg.training.deepspeed or "").lower()
    if sharded and quant.quantization_bit != 4:
        raise ConfigError("quantization_bit: FSDP / DeepSpeed ZeRO-3 shard only a 4-bit base (QLoRA's FSDP "
                          "recipe); set quantization_bit: 4")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantization_bit: needs bitsandbytes; install it with `pip install bitsandbytes` "
                          "(or `pip install -e '.[bitsandbytes]'`), or remove quantization_bit")


def check_pure_bf16(cfg: RunConfig) -> None:
    """LLaMA-Factory's pure_bf16 rules: not with fp16 autocast, not under DeepSpeed ZeRO-3 (it keeps fp32 itself)."""
    if not cfg.finetuning.pure_bf16:
        return
    if cfg.training.fp16:
        raise ConfigError("pure_bf16: trains in bf16; remove fp16: true")
    if "zero3" in str(cfg.training.deepspeed or "").lower() or "stage3" in str(cfg.training.deepspeed or "").lower():
        raise ConfigError("pure_bf16: DeepSpeed ZeRO-3 keeps its own fp32 master weights; remove pure_bf16 or use "
                          "ZeRO-2")


def check_half_precision_freeze(cfg: RunConfig) -> None:
    half = cfg.model.torch_dtype in ("bf16", "bfloat16", "fp16", "float16")
    if cfg.finetuning.finetuning_type == "freeze" and half and not (cfg.training.bf16 or cfg.training.fp16):
        raise ConfigError(
            f"'finetuning_type: freeze' with 'torch_dtype: {cfg.model.torch_dtype}' needs mixed precision: "
            "set 'bf16: true' (or 'fp16: true') so the frozen half-precision layers run under autocast"
        )


def check_batching(cfg: RunConfig) -> None:
    budget = cfg.data.max_tokens_per_batch
    if budget is None:
        return
    if cfg.data.packs:
        raise ConfigError("'max_tokens_per_batch' batches unpacked samples; with 'packing' rows are already full")
    if budget < cfg.data.cutoff_len:
        raise ConfigError(
            f"'max_tokens_per_batch' ({budget}) must be at least 'cutoff_len' ({cfg.data.cutoff_len}) so the "
            "longest sample fits in a batch"
        )
    if cfg.training.group_by_length:
        raise ConfigError("'max_tokens_per_batch' already groups by length; drop 'group_by_length'")


def check_loss_options(cfg: RunConfig) -> None:
    if cfg.loss.loss_weighting == "sample" and cfg.loss.loss_chunk_size == 0:
        raise ConfigError("'loss_weighting: sample' needs lmforge's loss: leave 'loss_chunk_size' unset or > 0")


def check_preference(cfg: RunConfig) -> None:
    ft, stage = cfg.preference, cfg.finetuning.stage
    spec = STAGES.get(stage)
    if (ft.ref_model and not (spec.uses_reference or spec.samples_rollouts)) or (
            ft.precompute_ref_log_probs and not spec.uses_reference):
        raise ConfigError(f"'ref_model'/'precompute_ref_log_probs' are for stage "
                          f"{' or '.join(stages_with(uses_reference=True))}, not '{stage}'")
    if not spec.token_loss:
        single = ", ".join(stages_with(token_loss=True))
        if cfg.training.group_by_length or cfg.data.max_tokens_per_batch:
            raise ConfigError(
                f"'group_by_length'/'max_tokens_per_batch' batch single sequences ({single}); stage {stage} "
                "batches pairs of sequences: remove them"
            )
        if cfg.loss.loss_weighting != "token":
            raise ConfigError(f"'loss_weighting' applies to {' and '.join(stages_with(token_loss=True))}, "
                              f"not stage {stage}")


def check_predict(cfg: RunConfig) -> None:
    if not cfg.training.do_predict:
        return
    if not STAGES.get(cfg.finetuning.stage).predicts:
        raise ConfigError(f"'do_predict' generates answers for stage {' or '.join(stages_with(predicts=True))}, "
                          f"not '{cfg.finetuning.stage}'")
    if not cfg.training.predict_with_generate:
        raise ConfigError("'do_predict' needs 'predict_with_generate: true': answers are generated, then scored "
                          "with BLEU-4 and ROUGE against the references")
    data = cfg.data
    if not (data.eval_dataset_names or data.val_size or (data.dataset_names and not cfg.training.do_train)):
        raise ConfigError("'do_predict' needs prompts to answer: set 'eval_dataset' or 'val_size' (or "
                          "'do_train: false' to predict on 'dataset')")


def check_output_dir(cfg: RunConfig) -> None:
    from pathlib import Path

    output = Path(str(cfg.training.output_dir))
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output_dir: {output} is a file; point 'output_dir' at a directory (new or existing)")
    blocked = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"output_dir: {output} cannot be created because {blocked} is a file")


def check_interleave_probs(cfg: RunConfig) -> None:
    raw = cfg.data.interleave_probs
    if raw is None:
        return
    pieces = [p.strip() for p in str(raw).split(",")]
    try:
        probs = [float(p) for p in pieces]
    except ValueError:
        raise ConfigError(f"'interleave_probs' must be comma-separated numbers (one per dataset), got '{raw}'") from None
    if any(not 0 <= p <= 1 for p in probs):
        raise ConfigError(f"'interleave_probs' are probabilities in [0, 1], got '{raw}'")
    if cfg.data.mix_strategy == "concat":
        raise ConfigError("'interleave_probs' applies to mix_strategy interleave_under / interleave_over, not concat")


def check_streaming(cfg: RunConfig) -> None:
    if cfg.data.streaming:
        raise ConfigError("'streaming' is not supported; tokenize large corpora once into memmap shards instead")


# First path parts that name where models are kept (the README's `models/`, LLaMA-Factory's `saves/`, run output
# dirs), not a hub organisation: `models/tiny` that does not exist is a missing path, never a download hint.
LOCAL_MODEL_DIRS = frozenset({"models", "model", "saves", "output", "outputs", "runs", "checkpoints", "ckpt"})


def check_model_path(value: str | None, revision: str | None = None) -> None:
    """A `model_name_or_path` written as a path (with a '/', or starting with '.' or '~') must exist, and a hub id
    (org/name, whose org is neither a local directory nor in LOCAL_MODEL_DIRS) must be in the Hugging Face cache.

    Checked with the config, before torch loads, so a typo costs no import time and exits 2 like every other
    config error. A bare name ('gpt2') is left to the model loader, which says how to get a model. A hub id is
    looked up at `revision` (`model_revision`; None: any cached revision) where transformers would find it
    (lmforge.model.hub_cache); one that is not cached gets the cache folder searched and the download command.
    """
    if not value or Path(value).expanduser().exists() or not ("/" in value or value.startswith((".", "~"))):
        return
    from lmforge.hub_cache import looks_like_hub_id, not_cached_message, resolve_hub_id

    org = value.split("/")[0]
    if looks_like_hub_id(value) and not Path(org).is_dir() and org.lower() not in LOCAL_MODEL_DIRS:
        if resolve_hub_id(value, revision) is not None:
            return
        raise ConfigError(not_cached_message("model_name_or_path", value, revision))
    path = Path(value).expanduser()
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    raise ConfigError(f"model_name_or_path: {value} does not exist{where}; lmforge loads local model "
                      f"directories only; check the path, or make a small random model with "
                      f"`lmforge create-model tiny-qwen2 {value}`")


def check_model_path_exists(cfg: RunConfig) -> None:
    check_model_path(cfg.model.model_name_or_path, cfg.model.model_revision)


def check_eval_tasks(cfg: RunConfig) -> None:
    """Every `eval_tasks` entry is well formed (`eval_tasks[i].key` named) and the files it names exist; a task
    name is looked up in include_path when the trainer is built (the task registry lives in lmforge.eval)."""
    for i, spec in enumerate(cfg.evaluators.evaluators):  # parsing raises on the first bad entry
        if spec.include_path is not None and not Path(spec.include_path).is_dir():
            raise ConfigError(f"eval_tasks[{i}].include_path: {spec.include_path} is not a directory")
        if spec.task.endswith((".yaml", ".yml")) and not Path(spec.task).is_file():
            raise ConfigError(f"eval_tasks[{i}].task: task file not found: {spec.task}")


_GALORE_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "adafactor")
_APOLLO_OPTIMS = ("adamw_torch", "adamw_torch_fused")


def check_optimizers(cfg: RunConfig) -> None:
    """use_galore / use_apollo / use_badam / use_adam_mini / use_muon (LLaMA-Factory's rules, its parser.py and
    finetuning_args.py): one at a time, not with LoRA+ nor (GaLore, APOLLO, BAdam) with LoRA; GaLore and APOLLO not
    under DeepSpeed; layer-wise stepping without gradient accumulation or sharding; BAdam on one process."""
    opt, training = cfg.optimizers, cfg.training
    chosen = opt.chosen
    if not chosen:
        return
    keys = [f"use_{name}" for name in chosen]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(repr(k) for k in keys)} each replace the optimizer; set one of them")
    name, key = chosen[0], keys[0]
    if getattr(cfg.lora, "loraplus_lr_ratio", None) is not None:
        raise ConfigError(f"'loraplus_lr_ratio' cannot be combined with {key}: each builds the optimizer; set one")
    ft = cfg.finetuning.finetuning_type
    if name in ("galore", "apollo", "badam") and ft == "lora":
        raise ConfigError(f"'{key}' trains full weights; it needs finetuning_type full or freeze, not lora")
    deepspeed, fsdp = bool(training.deepspeed), bool(training.fsdp)
    if name in ("galore", "apollo") and (deepspeed or fsdp):
        raise ConfigError(f"'{key}' projects whole weight matrices; it cannot run under "
                          f"{'deepspeed' if deepspeed else 'fsdp'} (remove one of them)")
    if name == "galore" and training.optim not in _GALORE_OPTIMS:
        raise ConfigError(f"use_galore: optim '{training.optim}' has no GaLore version; use one of {', '.join(_GALORE_OPTIMS)}")
    if name == "apollo" and training.optim not in _APOLLO_OPTIMS:
        raise ConfigError(f"use_apollo: optim '{training.optim}' has no APOLLO version; use one of {', '.join(_APOLLO_OPTIMS)}")
    layerwise = {"galore": opt.galore_layerwise, "apollo": opt.apollo_layerwise}.get(name, False)
    if layerwise and training.gradient_accumulation_steps != 1:
        raise ConfigError(f"{name}_layerwise steps each weight as soon as its gradient exists, so it cannot "
                          f"accumulate: set gradient_accumulation_steps: 1 (it is {training.gradient_accumulation_steps})")
    for rank_key in ("galore_rank", "galore_update_interval", "apollo_rank", "apollo_update_interval"):
        if rank_key.startswith(name) and getattr(opt, rank_key) < 1:
            raise ConfigError(f"{rank_key}: {getattr(opt, rank_key)} must be at least 1")
    if name == "badam":
        if deepspeed or fsdp:
            raise ConfigError(f"use_badam: lmforge runs BAdam on one process; remove {'deepspeed' if deepspeed else 'fsdp'}")
        interval = opt.badam_switch_interval
        if interval is not None and interval != -1 and interval < 1:
            raise ConfigError(f"badam_switch_interval: {interval}; use a number of steps >= 1, or -1 to never switch")
        if opt.badam_start_block is not None and opt.badam_start_block < 0:
            raise ConfigError(f"badam_start_block: {opt.badam_start_block} must be >= 0 (a decoder layer index)")
    if name == "muon" and (fsdp or "zero3" in str(training.deepspeed or "").lower()):
        raise ConfigError("use_muon: Muon orthogonalises each whole matrix, which FSDP / ZeRO-3 shard; use DDP or ZeRO-1/2")


RULES: tuple[Callable[[RunConfig], None], ...] = (
    check_choices,
    check_model_given,
    check_datasets_given,
    check_memmap,
    check_packing_stage,
    check_eval_source,
    check_adapter_keys,
    check_adapter_variants,
    check_optimizers,
    check_quantization,
    check_pure_bf16,
    check_half_precision_freeze,
    check_batching,
    check_loss_options,
    check_preference,
    check_rl,
    check_ema,
    check_predict,
    check_streaming,
    check_output_dir,
    check_interleave_probs,
    check_model_path_exists,
    check_eval_tasks,
)


def validate_config(cfg: RunConfig) -> None:
    """Run every rule; the first broken one raises a ConfigError naming its keys."""
    for rule in RULES:
        rule(cfg)
