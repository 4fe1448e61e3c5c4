"""What a stage keeps besides the policy's own training state: rollout KV cache, reference, reward model, value head.

    setup = for_stage(Setup(seq_len=512, micro_batch=8), STAGES.get("grpo"), rl=cfg.rl, generation=cfg.generation)
    plan = estimate_memory(shape, setup)
    [(line.name, line.bytes) for line in plan.extras]   # rollout KV cache, reference model, ...

Online RL (grpo, ppo) first generates, then trains on what it generated:

* The rollout generates all `per_device_train_batch_size` completions of a device at once (grpo counts
  completions, as TRL does; ppo's batch is its rollouts), each up to the prompt length (`cutoff_len`) plus the
  completion length, so the KV cache holds micro_batch sequences of that many tokens (arith/kv_cache.py) in the
  compute dtype. It is counted on top of the training peak: generation runs with the weights, gradients and
  optimizer states resident, and PyTorch's caching allocator keeps the cache's blocks reserved afterwards, so
  the sum is the safe bound.
* Training runs forward and backward over rows of prompt + completion tokens (memory.py passes
  seq_len + completion_len to activations.py).
* A reference model: under LoRA the policy with its adapter switched off serves (no weights), otherwise a
  frozen copy of the weights in the dtype frozen weights load in (train/preference.py `load_reference`).
* ppo also scores with a reward model (`reward_model`, a second frozen model of the policy's size) and trains a
  value head (one hidden_size -> 1 linear: negligible, but listed).

Which of these a stage has is read from its `Stage` spec and its config keys (`for_stage`), never from its name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lmforge.arith.kv_cache import kv_cache_bytes
from lmforge.stages import Stage

if TYPE_CHECKING:
    from lmforge.planner.memory import Setup
    from lmforge.planner.shape import ModelShape

REWARD_MODELS = ("none", "same_size", "unknown")
"""Setup.reward_model: no reward model, one of the policy's size, or one whose weights the planner cannot know."""


@dataclass(frozen=True)
class MemoryLine:
    """One named line of an estimate, in bytes on one device."""

    name: str
    bytes: float
    note: str = ""
    per_row: bool = False
    """Grows with the micro-batch (so it is not part of MemoryPlan.static)."""


def _key(name: str, *groups: Any) -> Any:
    for group in groups:
        if group is not None and hasattr(group, name):
            return getattr(group, name)
    raise AttributeError(f"no config group holds '{name}'")


def for_stage(setup: Setup, stage: Stage, *, rl: Any = None, generation: Any = None, preference: Any = None,
              reward_model: str | None = None) -> Setup:
    """`setup` (seq_len = the prompt length, cutoff_len) with what `stage` adds, read from its spec and keys.

    Args:
        rl, generation, preference: the run's config groups (RLArguments, GenerationArguments,
            PreferenceArguments); only the keys the spec names are read.
        reward_model: overrides the rl group's `reward_model` key.
    """
    completion = _key(stage.completion_length_key, rl, generation) if stage.completion_length_key else 0
    if stage.reference_weight_key:  # grpo: beta 0 loads no reference model at all
        reference = _key(stage.reference_weight_key, rl, preference) > 0
    else:
        reference = stage.uses_reference or stage.always_reference
    if stage.scores_with_reward_model:
        path = reward_model if reward_model is not None else getattr(rl, "reward_model", None)
        rm = "same_size" if path else "unknown"
    else:
        rm = "none"
    return replace(setup, completion_len=completion, reference=reference, reward_model=rm,
                   value_head=stage.value_head)


def frozen_weight_bytes(setup: Setup) -> int:
    """Bytes per weight of a frozen model as loaded: the compute dtype under DeepSpeed, else the checkpoint's half
    dtype on accelerators (fp32 on CPU, and for fp32 training); see memory.py."""
    if setup.deepspeed:
        return setup.compute_bytes
    return 2 if setup.compute_bytes == 2 and setup.device_type != "cpu" else 4


def stage_lines(shape: ModelShape, setup: Setup) -> tuple[MemoryLine, ...]:
    """The lines a stage adds to the estimate (see the module docstring); none for a plain setup."""
    lines = []
    base_params = shape.total_params - (shape.trainable_params if shape.lora_rank else 0)
    load_bytes = frozen_weight_bytes(setup)
    if setup.completion_len:
        tokens = setup.seq_len + setup.completion_len
        kv = kv_cache_bytes(layers=shape.num_layers, kv_heads=shape.num_kv_heads, head_dim=shape.head_dim,
                            tokens=tokens, sequences=setup.micro_batch, bytes_per_element=setup.compute_bytes)
        lines.append(MemoryLine(
            "rollout KV cache", kv,
            f"{setup.micro_batch} seqs x {tokens} tokens (prompt {setup.seq_len} + completion "
            f"{setup.completion_len}) x {shape.num_layers} layers x 2 x {shape.num_kv_heads} KV heads x "
            f"{shape.head_dim} x {setup.compute_bytes} bytes", per_row=True))
    if setup.reference:
        if shape.lora_rank:
            lines.append(MemoryLine("reference model", 0.0, "LoRA: the policy with its adapter off (no extra weights)"))
        else:
            lines.append(MemoryLine("reference model", base_params * load_bytes,
                                    f"frozen copy: {base_params:,} params x {load_bytes} bytes"))
    if setup.reward_model == "same_size":
        lines.append(MemoryLine("reward model", base_params * load_bytes,
                                f"frozen, the policy's size: {base_params:,} params x {load_bytes} bytes"))
    elif setup.reward_model == "unknown":
        lines.append(MemoryLine("reward model", 0.0, "NOT counted: reward_model unset, its weights cannot be known"))
    if setup.value_head:
        params = shape.hidden_size + 1
        lines.append(MemoryLine("value head", 16.0 * params,
                                f"hidden -> 1 linear, {params:,} params x 16 bytes (fp32 weight, grad, Adam): negligible"))
    return tuple(lines)
