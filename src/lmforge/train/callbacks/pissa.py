"""`pissa_convert`: save a PiSSA-trained adapter also as a plain LoRA adapter for the original base.

    trainer = BaseTrainer(..., callbacks=[PissaConvertCallback(output_dir)])   # with pissa_init + pissa_convert

PiSSA (`pissa_init`) starts A, B from the top singular triplets of each weight W and leaves the residual
W_res = W - B0 A0 in the model, so the trained adapter only means something on that residual base. With
W_res + B A = W + (B A - B0 A0), the difference is itself a LoRA of twice the rank, [B | -B0] [A ; A0], which
works on the untouched base. PEFT computes it (`save_pretrained(path_initial_model_for_weight_conversion=...)`)
from the initial adapter, so (as LLaMA-Factory's PissaConvertCallback does) this callback saves:

    output_dir/pissa_init/        the adapter before the first step (kept: the conversion reads it)
    output_dir/pissa_converted/   the plain LoRA adapter (rank 2r) for the original base, at the end of training

output_dir itself still gets the PiSSA adapter the trainer saves; it reproduces the tuned model only on the
residual base (which PEFT rebuilds when loading it, exactly for pissa_iter -1).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from transformers import TrainerCallback

from lmforge.logging import get_logger

logger = get_logger(__name__)

INITIAL_DIR = "pissa_init"
CONVERTED_DIR = "pissa_converted"


class PissaConvertCallback(TrainerCallback):
    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        initial = self.output_dir / INITIAL_DIR
        if not args.should_save or not hasattr(model, "peft_config"):
            return
        if state.global_step > 0:
            # a resumed run: the adapter is no longer the initial one; the conversion needs the first run's save
            if not (initial / "adapter_config.json").is_file():
                logger.warning("pissa_convert: resumed without %s from the first run; no converted adapter", initial)
            return
        with _plain_init(model):
            # saved with init_lora_weights true: PEFT refuses (and would otherwise re-decompose the residual)
            # an initial adapter that asks for PiSSA again when it loads it for the conversion
            model.save_pretrained(str(initial))
        logger.info("pissa_convert: initial PiSSA adapter saved to %s", initial)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        initial = self.output_dir / INITIAL_DIR
        if not args.should_save or not hasattr(model, "peft_config") or not (initial / "adapter_config.json").is_file():
            return
        converted = self.output_dir / CONVERTED_DIR
        # PEFT loads the initial adapter beside the trained one, subtracts it and deletes it again; the trained
        # ("default") adapter and the residual base are left as they were
        with warnings.catch_warnings():
            # PEFT's advice to convert the PiSSA adapter, given while it loads the initial adapter to convert it
            warnings.filterwarnings("ignore", message="PiSSA changes the base weights", category=UserWarning)
            model.save_pretrained(str(converted), path_initial_model_for_weight_conversion=str(initial))
        logger.info("pissa_convert: plain LoRA adapter for the original base saved to %s", converted)


class _plain_init:
    """Temporarily mark the active adapter's init as plain LoRA (what its saved config should say)."""

    def __init__(self, model):
        self.config = model.peft_config[model.active_adapter]
        self.saved = self.config.init_lora_weights

    def __enter__(self):
        self.config.init_lora_weights = True

    def __exit__(self, *exc):
        self.config.init_lora_weights = self.saved
