"""`lmforge export CONFIG`: merge LoRA adapters into their base and write a standalone Hugging Face model.

    lmforge export examples/merge_lora.yaml      # model_name_or_path + adapter_name_or_path + export_dir

The merge runs in fp32 (B @ A added to the base weights exactly once), then the weights are cast to
`export_dtype` (auto = the dtype the base model was saved in) and written as safetensors shards of at most
`export_size` GB, with the tokenizer, a generation config whose eos ids are the template's stop tokens, and
the adapter's `lmforge_run.json` (so `lmforge chat` finds the template). Plain transformers loads the result,
and its `apply_chat_template` renders what lmforge does: the tokenizer's chat_template is the run's named
template written as Jinja (jinja_export.py; `template: auto` keeps the tokenizer's own).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from lmforge.config import InferenceConfig, load_inference_config
from lmforge.errors import ConfigError
from lmforge.logging import get_logger

logger = get_logger(__name__)

EXPORT_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                 "fp32": "float32", "float32": "float32"}
"""export_dtype names -> torch dtype names (torch is imported only once the config has been checked)."""


def export_model(cfg: InferenceConfig) -> Path:
    """Merge and write; returns the export directory.

    Raises:
        ConfigError: no export_dir, a non-empty export_dir without export_overwrite, an unknown export_dtype.
    """
    export = cfg.export
    if not export.export_dir:
        raise ConfigError(f"{cfg.source}: set 'export_dir' (where the merged model is written)")
    if export.export_dtype != "auto" and export.export_dtype not in EXPORT_DTYPES:
        raise ConfigError(f"export_dtype: '{export.export_dtype}' is not one of auto, {', '.join(EXPORT_DTYPES)}")
    if export.export_size <= 0:
        raise ConfigError(f"'export_size' must be > 0 (GB), got {export.export_size}")
    out = Path(export.export_dir)
    if out.exists() and any(out.iterdir()):
        if not export.export_overwrite:
            raise ConfigError(
                f"export_dir {out} is not empty; choose another directory or set 'export_overwrite: true' to replace it"
            )
        shutil.rmtree(out)
    adapters = [p.strip() for p in (cfg.model.adapter_name_or_path or "").split(",") if p.strip()]
    import torch

    from lmforge.model.loader import config_dtype, load_model
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.data.templates import resolve_template
    from lmforge.run_info import RUN_INFO_FILE, trained_template

    model_args = replace(cfg.model, torch_dtype="fp32")
    adapter = replace(cfg.adapter, finetuning_type="lora" if adapters else "full")
    if adapter.quantization.enabled and adapters:  # a QLoRA run: merged into the base it trained against
        from lmforge.export.qlora_merge import load_dequantized_merged

        model = load_dequantized_merged(model_args, adapter)
    else:
        model = load_model(model_args, adapter, is_trainable=False)  # adapters merged, frozen
    saved = config_dtype(model.config)
    named = EXPORT_DTYPES.get(export.export_dtype)
    dtype = getattr(torch, named) if named else saved or torch.float32
    model = model.to(dtype)
    model.config.use_cache = True

    tokenizer = load_tokenizer(cfg.model)
    template = resolve_template(
        cfg.data.template or trained_template(cfg.model.adapter_name_or_path, cfg.model.model_name_or_path), tokenizer)
    write_chat_template(tokenizer, template, cfg)
    stop_ids = template.stop_token_ids(tokenizer)
    if stop_ids:
        model.generation_config.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=int(export.export_size * 1e9), safe_serialization=True)
    tokenizer.save_pretrained(out)
    for source in [*reversed(adapters), cfg.model.model_name_or_path]:
        if (Path(source) / RUN_INFO_FILE).is_file():
            shutil.copyfile(Path(source) / RUN_INFO_FILE, out / RUN_INFO_FILE)
            break
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    logger.info("exported %s (%s, %d shard%s) to %s", cfg.model.model_name_or_path + (
        f" + {len(adapters)} adapter(s)" if adapters else ""), str(dtype).removeprefix("torch."), len(shards),
        "" if len(shards) == 1 else "s", out)
    return out


def write_chat_template(tokenizer, template, cfg: InferenceConfig) -> None:
    """Give the exported tokenizer the run's template as its Jinja chat_template, so plain transformers
    (`apply_chat_template`) prompts the merged model with the text lmforge trained and chats with.

    `auto` keeps the tokenizer's own chat_template (it is what lmforge rendered). The system prompt used when
    a conversation has none is the config's `default_system`, else the run's (training gave it to every
    sample without one), else the template's own. Reasoning templates (qwen3, deepseekr1) get the run's
    `enable_thinking` (else the config's): with it false the generation prompt ends with the empty block.
    """
    from lmforge.data.templates import Template
    from lmforge.data.templates.jinja_export import to_jinja
    from lmforge.run_info import trained_setting

    if not isinstance(template, Template):
        logger.info("chat template: the tokenizer's own kept (template '%s')", template.name)
        return
    sources = (cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
    default_system = cfg.data.default_system or trained_setting("default_system", *sources) or None
    thinking = getattr(template, "thought_words", None) is not None
    enable_thinking = None
    if thinking:
        enable_thinking = _run_enable_thinking(cfg)
        enable_thinking = template.enable_thinking if enable_thinking is None else enable_thinking
    tokenizer.chat_template = to_jinja(template, enable_thinking=enable_thinking, default_system=default_system)
    logger.info("chat template: lmforge template '%s'%s%s written to the tokenizer", template.name,
                f" (enable_thinking {enable_thinking})" if thinking else "",
                " with the run's default_system" if default_system else "")


def _run_enable_thinking(cfg: InferenceConfig) -> bool | None:
    """The run's enable_thinking (lmforge_run.json: top level, else its data keys), else the config's, else
    None (the template's own)."""
    from lmforge.run_info import trained_setting

    sources = (cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
    recorded = trained_setting("enable_thinking", *sources)
    if recorded is None:
        recorded = (trained_setting("data", *sources) or {}).get("enable_thinking")
    return recorded if recorded is not None else getattr(cfg.data, "enable_thinking", None)


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge export", description="Merge LoRA adapters and export a model.")
    parser.add_argument("config", help="YAML/JSON with model_name_or_path, adapter_name_or_path, export_dir, ...")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    args = parser.parse_args(argv)
    out = export_model(load_inference_config(args.config, args.overrides))
    print(f"exported to {out}")
    return 0
