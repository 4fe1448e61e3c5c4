"""`lmforge estimate`: memory per device, the largest micro-batch that fits, training time, and run MFU.

    lmforge estimate models/qwen2.5-1.5b --seq-len 2048 --micro-batch 4 --zero 2 --devices 8 --device-memory 80GiB
    lmforge estimate config.json --finetuning-type lora --tokens 1B --mfu 0.4 --gpu H100
    lmforge estimate mfu --params 65B --tokens 1.4T --time 21d --devices 2048 --peak-tflops 312
    lmforge estimate examples/train_full/qwen_grpo.yaml --device-memory 80GiB   # a run config; flags override it

A run config (a training YAML/JSON) fills the options from its keys: model_name_or_path, cutoff_len,
per_device_train_batch_size, bf16/fp16, optim / use_*, gradient_checkpointing, finetuning_type and its
adapter keys, quantization_bit, stage. A stage that samples rollouts (grpo, ppo) adds what its `Stage` spec
declares (planner/stage_memory.for_stage): the rollout KV cache, a reference / reward model, a value head, and
training rows of prompt (cutoff_len) + completion tokens.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, get_args

from lmforge.config.adapter_args import AdapterArguments
from lmforge.config.finetuning_args import FinetuningType
from lmforge.config.freeze_args import FreezeArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.errors import ConfigError
from lmforge.planner.activations import ATTENTION_KINDS
from lmforge.planner.memory import (
    DTYPE_BYTES,
    MEMORY_SAVING,
    OFFLOAD,
    OPTIMIZER_STATE_BYTES,
    MemoryPlan,
    Setup,
    estimate_memory,
    max_micro_batch,
)
from lmforge.planner.stage_memory import for_stage
from lmforge.planner.timing import (
    format_duration,
    parse_bytes,
    parse_count,
    parse_duration,
    run_mfu,
    train_seconds,
)
from lmforge.stages import STAGES, stages_with

if TYPE_CHECKING:
    from lmforge.planner.shape import ModelShape

UNITS = {"GiB": 2**30, "GB": 1e9}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage mistake is a user error: one line, exit 2, no traceback
        raise ConfigError(f"estimate: {message}")


def _memory_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lmforge estimate", description="Memory per device, largest micro-batch and training time "
                "for a model under a training setup (nothing is loaded: the model is built on the meta device).")
    p.add_argument("model", help="a config.json or a model directory holding one, or a run config (a training "
                   "YAML/JSON with model_name_or_path) whose keys fill the options below (flags override them)")
    p.add_argument("--stage", choices=STAGES.names(), default=None,
                   help="training stage; one that samples rollouts (grpo, ppo) adds its rollout KV cache, reference, "
                   "reward model and value head (unset: the run config's stage, else a plain training step)")
    p.add_argument("--completion-len", type=int, default=None,
                   help="grpo / ppo: tokens generated per completion (default: the stage's key, e.g. "
                   "max_completion_length, from the run config or its default)")
    p.add_argument("--reward-model", default=None, help="ppo: the reward model (counted at the policy's size)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per row (cutoff_len; packed rows: the pack length)")
    p.add_argument("--micro-batch", type=int, default=1, help="rows per device per forward (per_device_train_batch_size)")
    p.add_argument("--dtype", choices=list(DTYPE_BYTES), default="bf16", help="training precision (bf16/fp16: mixed)")
    p.add_argument("--finetuning-type", choices=get_args(FinetuningType), default="full")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-target", default="all", help="comma-separated linear module names, or all")
    p.add_argument("--freeze-trainable-layers", type=int, default=2, help="freeze: last N layers train (-N: first N)")
    p.add_argument("--optimizer", default="adamw_torch", help=f"the `optim` key, or galore / apollo / adam_mini / badam / muon for use_*: {', '.join(OPTIMIZER_STATE_BYTES)}")
    p.add_argument("--optimizer-rank", type=int, default=16,
                   help="galore / apollo: galore_rank / apollo_rank (use_galore, use_apollo: --optimizer galore)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=None, help="DeepSpeed ZeRO stage (unset: DDP)")
    p.add_argument("--offload", choices=list(OFFLOAD), default="none", help="DeepSpeed offload to host memory")
    p.add_argument("--devices", "--gpus", type=int, default=1, help="data-parallel devices (all nodes)")
    p.add_argument("--attention", choices=sorted(ATTENTION_KINDS), default="sdpa",
                   help="eager keeps [heads, s, s] probabilities; fused kernels do not")
    p.add_argument("--device-type", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: frozen weights stay fp32 (lmforge loads fp32 for CPU training)")
    p.add_argument("--quantization-bit", type=int, choices=(4, 8),
                   help="QLoRA: the base's layer weights in 4 or 8 bits (bitsandbytes; with --finetuning-type lora)")
    p.add_argument("--no-double-quantization", action="store_true",
                   help="4-bit without quantized block scales (0.5625 instead of 0.5159 bytes per weight)")
    p.add_argument("--supervised-fraction", type=float, default=1.0,
                   help="share of tokens with a loss (1 for pt; the loss keeps only these rows)")
    p.add_argument("--device-memory", help="memory of one device (80GiB, 80GB; a plain number is GiB): "
                   "print the largest micro-batch that fits")
    p.add_argument("--tokens", help="tokens to train (1B, 3e9): print the time at --mfu")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for --tokens (default 0.4)")
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of one device in --dtype")
    p.add_argument("--gpu", help="look the peak up by name (H100, A100, ...) instead of --peak-tflops")
    p.add_argument("--units", choices=list(UNITS), default="GiB", help="GiB = 2^30 bytes (default), GB = 10^9")
    return p


def _mfu_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lmforge estimate mfu", description="The MFU a finished run reached: FLOPs per token x "
                "tokens / (devices x peak FLOP/s x time), with 6N FLOPs per token (N = parameters).")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--params", help="parameters N (65B, 6.5e10): 6N FLOPs per token")
    size.add_argument("--model", help="a config.json or model directory: 6N from its parameters, and lmforge's count")
    p.add_argument("--tokens", required=True, help="tokens trained (1.4T, 300B)")
    p.add_argument("--time", required=True, help="wall time (21d, 504h, 90m, seconds)")
    p.add_argument("--devices", "--gpus", type=int, required=True)
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of one device")
    p.add_argument("--gpu", help="look the peak up by name (A100, H100, ...) in bf16")
    p.add_argument("--seq-len", type=int, default=2048, help="with --model: sequence length for the attention term")
    return p


def estimate_main(argv: list[str]) -> int:
    if argv and argv[0] == "mfu":
        return _mfu_main(_mfu_parser().parse_args(argv[1:]))
    parser = _memory_parser()
    args = parser.parse_args(argv)
    groups: dict = {}
    if _is_run_config(args.model):
        defaults, groups = _run_config_defaults(args.model)
        parser.set_defaults(**defaults)  # flags given on the command line still win
        args = parser.parse_args(argv)
        args.model = groups["model"].model_name_or_path
    adapter = AdapterArguments(
        finetuning_type=args.finetuning_type,
        lora=LoraArguments(lora_rank=args.lora_rank, lora_target=args.lora_target),
        freeze=FreezeArguments(freeze_trainable_layers=args.freeze_trainable_layers),
    )
    from lmforge.planner.shape import load_shape  # torch: only once the arguments are checked

    shape = load_shape(args.model, adapter)
    setup = Setup(
        seq_len=args.seq_len, micro_batch=args.micro_batch, dtype=args.dtype, optimizer=args.optimizer,
        optimizer_rank=args.optimizer_rank,
        gradient_checkpointing=args.gradient_checkpointing, zero=args.zero, offload=args.offload,
        devices=args.devices, attention=args.attention, device_type=args.device_type,
        supervised_fraction=args.supervised_fraction, quantization_bit=args.quantization_bit,
        double_quantization=not args.no_double_quantization,
    )
    if args.quantization_bit and args.finetuning_type != "lora":
        raise ConfigError("--quantization-bit: a quantized base trains only through LoRA; add --finetuning-type lora")
    setup = _with_stage(setup, args, groups)
    plan = estimate_memory(shape, setup)
    unit, scale = args.units, UNITS[args.units]
    print(format_plan(shape, plan, unit, scale))
    if args.device_memory:
        device_bytes = parse_bytes(args.device_memory, "--device-memory")
        best = max_micro_batch(shape, setup, device_bytes)
        per_row = (estimate_memory(shape, replace(setup, micro_batch=2)).total
                   - estimate_memory(shape, replace(setup, micro_batch=1)).total)
        print(f"\nlargest micro-batch in {device_bytes / scale:.2f} {unit}: {best}"
              f"  (each row adds {per_row / scale:.3f} {unit}; fixed part {plan.static / scale:.2f} {unit})")
    if args.tokens:
        tokens = parse_count(args.tokens, "--tokens")
        peak = _peak_flops(args.peak_tflops, args.gpu, args.dtype)
        trained_len = setup.seq_len + setup.completion_len  # online RL trains on prompt + completion rows
        per_token = shape.flops.per_token(trained_len)
        seconds = train_seconds(flops_per_token=per_token, tokens=tokens, devices=args.devices, peak_flops=peak,
                                mfu=args.mfu)
        print(f"\ntime for {tokens:.3g} tokens at MFU {args.mfu:.0%} on {args.devices} x {peak / 1e12:g} TFLOP/s: "
              f"{format_duration(seconds)}  ({per_token:.4g} FLOPs/token: lmforge's count at seq {trained_len}, "
              f"6N = {6 * shape.flops.matmul_params:.4g})")
        if setup.completion_len:
            print("  (training steps only: the rollouts' generation time is not counted)")
    return 0


def _is_run_config(path: str) -> bool:
    """A training config (YAML, or JSON naming model_name_or_path / stage) rather than a model's config.json."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix in (".yaml", ".yml"):
        return True
    if p.suffix != ".json":
        return False
    from lmforge.config.loader import read_config_file

    raw = read_config_file(p)
    return "model_name_or_path" in raw or "stage" in raw


def _run_config_defaults(path: str) -> tuple[dict, dict]:
    """The memory parser's defaults from a run config's keys, and its typed groups (rl, generation, ...).

    Keys are checked (unknown ones fail with did-you-mean) and coerced, but the run's cross-field rules are not
    run: an estimate is wanted before the datasets or output directory exist."""
    from lmforge.config.loader import KEY_GROUP, LIGHT_GROUPS, TrainingView, read_config_file, route_and_coerce
    from lmforge.config.validate import validate_keys

    raw = read_config_file(path)
    validate_keys(raw, KEY_GROUP, str(path))
    per_group = route_and_coerce(raw, str(path))
    try:
        groups = {g: LIGHT_GROUPS[g](**values) for g, values in per_group.items() if g in LIGHT_GROUPS}
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not groups["model"].model_name_or_path:
        raise ConfigError(f"{path}: set 'model_name_or_path' (a model directory or config.json to estimate)")
    training = TrainingView(per_group["training"])
    optimizer, rank = training.optim, 16
    for name in MEMORY_SAVING:  # use_galore: true etc. pick the optimizer, as train/optimizers does
        if getattr(groups["optimizers"], f"use_{name}", False):
            optimizer, rank = name, getattr(groups["optimizers"], f"{name}_rank", 16)
    defaults = dict(
        stage=groups["finetuning"].stage, seq_len=groups["data"].cutoff_len,
        micro_batch=training.per_device_train_batch_size,
        dtype="bf16" if training.bf16 else "fp16" if training.fp16 else "fp32",
        finetuning_type=groups["finetuning"].finetuning_type, lora_rank=groups["lora"].lora_rank,
        lora_target=groups["lora"].lora_target, freeze_trainable_layers=groups["freeze"].freeze_trainable_layers,
        optimizer=optimizer, optimizer_rank=rank, gradient_checkpointing=bool(training.gradient_checkpointing),
        quantization_bit=groups["quantization"].quantization_bit,
    )
    return defaults, groups


def _with_stage(setup: Setup, args, groups: dict) -> Setup:
    """`setup` with what a rollout-sampling stage keeps besides the policy, read from its spec (`for_stage`), over
    the run config's groups (or the groups' defaults when only flags were given)."""
    if not args.stage or not STAGES.get(args.stage).samples_rollouts:
        if args.completion_len or args.reward_model:
            rollouts = " or ".join(stages_with(samples_rollouts=True))
            raise ConfigError(f"--completion-len / --reward-model: only for a stage that samples rollouts "
                              f"(--stage {rollouts}, or stage: in the run config)")
        return setup
    from lmforge.config.generation_args import GenerationArguments
    from lmforge.config.preference_args import PreferenceArguments
    from lmforge.config.rl_args import RLArguments

    setup = for_stage(setup, STAGES.get(args.stage), rl=groups.get("rl", RLArguments()),
                      generation=groups.get("generation", GenerationArguments()),
                      preference=groups.get("preference", PreferenceArguments()), reward_model=args.reward_model)
    if args.completion_len is not None:
        setup = replace(setup, completion_len=args.completion_len)
    return setup


def _peak_flops(tflops: float | None, gpu: str | None, dtype: str) -> float:
    if tflops:
        return tflops * 1e12
    if gpu:
        from lmforge.arith.peak_tflops import lookup_peak_flops

        found = lookup_peak_flops(gpu, dtype if dtype in ("bf16", "fp16") else "fp32")
        if found is None:
            raise ConfigError(f"--gpu: no datasheet peak for '{gpu}' in {dtype}; pass --peak-tflops")
        return found[0]
    raise ConfigError("the device peak is needed: pass --peak-tflops N or --gpu NAME (e.g. H100)")


def format_plan(shape: ModelShape, plan: MemoryPlan, unit: str, scale: float) -> str:
    """The memory breakdown as printed by `lmforge estimate`."""
    s = plan.setup
    regime = (f"DeepSpeed ZeRO-{s.zero}" + (f", offload {s.offload}" if s.offload != "none" else "")
              if s.deepspeed else ("DDP" if s.devices > 1 else "one device, no ZeRO"))
    precision = {"fp32": "fp32", "bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision"}[s.dtype]
    lines = [
        f"model: {shape.name} ({shape.model_type}): {shape.total_params:,} parameters, {shape.num_layers} layers, "
        f"hidden {shape.hidden_size}, MLP {shape.intermediate_size}, {shape.num_heads} heads "
        f"({shape.num_kv_heads} KV), vocab {shape.vocab_size}",
        f"training: {shape.trainable_params:,} trainable ({shape.trainable_params / shape.total_params:.2%}), "
        f"{s.optimizer}, {precision}, {regime}, {s.devices} device(s)",
        f"micro-batch: {s.micro_batch} x {_row_tokens(s)}, {s.attention} attention, "
        f"checkpointing {'on' if s.gradient_checkpointing else 'off'}, supervised share {s.supervised_fraction:g}",
        "",
        f"memory per device ({unit}; 1 GiB = 2^30 bytes, 1 GB = 10^9 bytes)",
    ]
    rows = [
        ("weights", plan.weights, _per_param(plan.weights, shape.total_params)),
        ("gradients", plan.gradients, _per_param(plan.gradients, shape.trainable_params, "trainable")),
        ("optimizer states", plan.optimizer, _per_param(plan.optimizer, shape.trainable_params, "trainable")),
    ]
    if plan.gathered:
        rows.append(("ZeRO-3 gathered params", plan.gathered, "two largest layers/embedding in the compute dtype"))
    acts = plan.activations
    rows += [
        ("activations", acts.layers + acts.recompute,
         f"{(acts.layers + acts.recompute) / (s.micro_batch * (s.seq_len + s.completion_len)):,.0f} bytes/token"),
    ]
    if acts.weight_copies:
        rows.append(("autocast weight copies", acts.weight_copies, f"{s.compute_bytes} bytes per cast matmul weight"))
    rows.append(("logits / loss", acts.loss, f"chunked CE, {s.loss_chunk}-token chunks"))
    rows += [(line.name, line.bytes, line.note) for line in plan.extras]  # the stage's own (stage_memory.py)
    for name, value, note in rows:
        lines.append(f"  {name:<24}{value / scale:>10.3f} {unit}   {note}")
    lines.append(f"  {'total (peak)':<24}{plan.total / scale:>10.3f} {unit}")
    if plan.host:
        lines.append(f"  {'host memory (offload)':<24}{plan.host / scale:>10.3f} {unit}   per device's share")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)


def _row_tokens(s: Setup) -> str:
    if not s.completion_len:
        return f"{s.seq_len} tokens"
    return f"{s.seq_len + s.completion_len} tokens (prompt {s.seq_len} + completion {s.completion_len})"


def _per_param(value: float, params: int, which: str = "") -> str:
    if not params:
        return ""
    return f"{value / params:.3g} bytes/param{' (' + which + ')' if which else ''}"


def _mfu_main(args) -> int:
    tokens = parse_count(args.tokens, "--tokens")
    seconds = parse_duration(args.time, "--time")
    peak = _peak_flops(args.peak_tflops, args.gpu, "bf16")
    if args.params:
        params = parse_count(args.params, "--params")
        counts = [("6N", 6 * params)]
    else:
        from lmforge.planner.shape import load_shape

        shape = load_shape(args.model)
        params = shape.total_params
        counts = [("6N", 6 * params), (f"lmforge's count at seq {args.seq_len}", shape.flops.per_token(args.seq_len))]
    print(f"{tokens:.4g} tokens in {format_duration(seconds)} on {args.devices} devices x {peak / 1e12:g} TFLOP/s, "
          f"N = {params:.4g} parameters")
    for name, per_token in counts:
        mfu = run_mfu(flops_per_token=per_token, tokens=tokens, seconds=seconds, devices=args.devices, peak_flops=peak)
        print(f"  MFU ({name}, {per_token:.4g} FLOPs/token): {mfu:.1%}")
    return 0
