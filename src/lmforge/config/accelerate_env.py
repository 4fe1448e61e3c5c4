"""What `accelerate launch --config_file X.yaml` asks for, read from the environment it gives each worker.

    accelerate launch --config_file examples/accelerate/fsdp_config.yaml -m lmforge.cli train cfg.yaml

accelerate passes its config to the workers as ACCELERATE_* / FSDP_* variables. On a GPU machine accelerate
reads them itself. On a CPU machine lmforge must set `use_cpu` (or the workers never join one gloo group),
and accelerate then builds a plain multi-CPU (DDP) setup and skips its FSDP variables: the run would train
with another strategy than the one asked for. So lmforge translates the FSDP variables into transformers'
own `fsdp` / `fsdp_config` arguments, the route a YAML's `fsdp` keys take, which FSDP2 runs over gloo; a
strategy that cannot run on CPU stops the run before anything loads.
"""

from __future__ import annotations

from collections.abc import Mapping

from lmforge.errors import ConfigError

# accelerate's variable -> transformers' fsdp_config key
_FSDP_KEYS = {
    "FSDP_VERSION": "version",
    "FSDP_AUTO_WRAP_POLICY": "auto_wrap_policy",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "transformer_layer_cls_to_wrap",
    "FSDP_MIN_NUM_PARAMS": "min_num_params",
    "FSDP_OFFLOAD_PARAMS": "cpu_offload",
    "FSDP_RESHARD_AFTER_FORWARD": "reshard_after_forward",
    "FSDP_STATE_DICT_TYPE": "state_dict_type",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "cpu_ram_efficient_loading",
    "FSDP_ACTIVATION_CHECKPOINTING": "activation_checkpointing",
}


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").strip().lower() in ("1", "true", "yes")


def launched_fsdp_config(env: Mapping[str, str]) -> dict | None:
    """transformers' `fsdp_config` for the FSDP that `accelerate launch` asked for; None when it asked for none.

    Raises ConfigError for what a CPU machine cannot run (DeepSpeed, Megatron-LM, FSDP1).
    """
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError(
            "accelerate launch asks for DeepSpeed (distributed_type: DEEPSPEED), which needs a GPU; on this CPU "
            "machine use an FSDP config with fsdp_version: 2 (examples/accelerate/fsdp_config.yaml) or plain DDP "
            "(NPROC_PER_NODE=2 lmforge train ...)"
        )
    if _flag(env, "ACCELERATE_USE_MEGATRON_LM"):
        raise ConfigError("accelerate launch asks for Megatron-LM, which lmforge does not support; use FSDP or DDP")
    if not _flag(env, "ACCELERATE_USE_FSDP"):
        return None
    version = env.get("FSDP_VERSION", "1").strip()  # accelerate's default when the config names none
    if version != "2":
        raise ConfigError(
            f"accelerate launch asks for FSDP version {version}; on a CPU machine lmforge runs FSDP2 only (FSDP1 "
            "needs a GPU and is deprecated in transformers): add 'fsdp_version: 2' under fsdp_config in the "
            "accelerate config (examples/accelerate/fsdp_config.yaml)"
        )
    config: dict = {}
    for variable, key in _FSDP_KEYS.items():
        value = env.get(variable)
        if value is None or value == "":
            continue
        if key == "transformer_layer_cls_to_wrap":
            config[key] = [name.strip() for name in value.split(",") if name.strip()]
        elif key in ("cpu_offload", "reshard_after_forward", "cpu_ram_efficient_loading", "activation_checkpointing"):
            config[key] = _flag(env, variable)
        elif key in ("version", "min_num_params"):
            config[key] = int(value)
        else:
            config[key] = value
    if config.get("auto_wrap_policy") != "SIZE_BASED_WRAP":
        config.pop("min_num_params", None)  # accelerate writes its default even where it means nothing
    return config


def check_fsdp_on_cpu(fsdp, fsdp_config) -> None:
    """Refuse FSDP settings that a machine without an accelerator cannot honour, naming the key.

    `fsdp`/`fsdp_config` are transformers' arguments (from the YAML or from `launched_fsdp_config`).
    """
    if not fsdp:
        return
    options = fsdp.split() if isinstance(fsdp, str) else list(fsdp) if isinstance(fsdp, list) else []
    config = fsdp_config if isinstance(fsdp_config, dict) else {}
    config = {key.removeprefix("fsdp_"): value for key, value in config.items()}
    offload = "offload" in options or str(config.get("cpu_offload", config.get("offload_params", False))).lower() == "true"
    if offload:
        raise ConfigError(
            "FSDP parameter offload (fsdp 'offload' / fsdp_config cpu_offload / fsdp_offload_params) moves "
            "parameters from the accelerator to CPU memory; on a machine without one they are in CPU memory already "
            "and torch refuses the offload: remove it (plain FSDP shards them across the processes)"
        )
    if str(config.get("version", 2)) != "2":
        raise ConfigError(
            f"fsdp_config version {config.get('version')}: on a CPU machine lmforge runs FSDP2 only (FSDP1 needs "
            "a GPU and is deprecated in transformers): set 'version: 2'"
        )
