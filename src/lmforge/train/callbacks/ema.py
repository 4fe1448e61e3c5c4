"""`ema_decay`: an exponential moving average of the trained weights, kept beside the run and saved as a model.

    ema_decay: 0.999          # in the training YAML -> output_dir/ema (a model, or an adapter for LoRA)

After every optimizer step each trainable parameter's average moves towards it: ema <- decay * ema + (1 - decay) *
param (fp32, on the parameter's device; memory: one fp32 copy of the trainable weights). The average starts from
the weights training starts from. Every checkpoint holds it (`ema.safetensors`) and a resumed run continues from
it, so resuming changes nothing. At the end the averaged weights are swapped into the model, saved with
`save_pretrained` to output_dir/ema (an adapter for LoRA runs: only trainable weights are averaged), and swapped
back. Weight averaging of this kind (Polyak averaging; the EMA of Adam's iterates) usually gives a model whose
loss is lower than the last iterate's late in training; `lmforge average` does the same over saved checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.logging import get_logger

logger = get_logger(__name__)

EMA_FILE = "ema.safetensors"
EMA_DIR = "ema"


class EmaCallback(TrainerCallback):
    def __init__(self, decay: float, resume_from: str | None = None):
        self.decay = decay
        self.resume_from = resume_from
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        self.average: list[torch.Tensor] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None,
                       **kwargs):
        named = [(n, p) for n, p in _unwrapped(model).named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        saved = Path(self.resume_from) / EMA_FILE if self.resume_from else None
        if saved is not None and saved.exists():
            from safetensors.torch import load_file

            tensors = load_file(str(saved))
            self.average = [tensors[n].to(p.device) for n, p in named]
        else:
            self.average = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self.params], 1.0 - self.decay)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.is_world_process_zero:
            from safetensors.torch import save_file

            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            save_file({n: t.detach().cpu().contiguous() for n, t in zip(self.names, self.average)},
                      str(folder / EMA_FILE))

    @torch.no_grad()
    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None,
                     processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        model = _unwrapped(model)
        current = [p.detach().clone() for p in self.params]
        for param, average in zip(self.params, self.average):
            param.copy_(average.to(param.dtype))
        try:
            target = Path(args.output_dir) / EMA_DIR
            model.save_pretrained(str(target), safe_serialization=True)
            if processing_class is not None:
                processing_class.save_pretrained(str(target))
        finally:
            for param, value in zip(self.params, current):
                param.copy_(value)
        logger.info("ema_decay %g: the averaged weights saved to %s", self.decay, target)


def _unwrapped(model):
    return getattr(model, "module", model)
