"""A causal LM with a scalar value head: the reward model of `stage: rm`.

    model = ValueHeadModel(load_model(...))           # full, freeze or LoRA backbone
    values = model(input_ids, attention_mask)          # [B, T], one value per position
    scores = last_token_values(values, attention_mask) # [B], the reward of each (right-padded) sequence
    model.save_pretrained("saves/rm")                  # backbone as usual + value_head.safetensors
    model = load_reward_model(model_args)              # back, frozen, giving the same scores

The head reads the decoder's final hidden states (the lm_head is skipped, its logits are never computed).
The head's weights are stored as `value_head.safetensors` under trl's / LLaMA-Factory's key names
(`v_head.summary.weight`, `v_head.summary.bias`) next to the backbone's weights or adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lmforge.errors import ModelError
from lmforge.model.hidden_states import forward_hidden

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.summary(hidden).squeeze(-1)


class ValueHeadModel(nn.Module):
    """`pretrained_model` (a causal LM, possibly a PeftModel) plus `v_head`, a linear map to one value."""

    def __init__(self, pretrained_model: nn.Module):
        super().__init__()
        self.pretrained_model = pretrained_model
        self.v_head = ValueHead(pretrained_model.config.hidden_size)

    @property
    def config(self):
        return self.pretrained_model.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False, **kwargs}
        _, hidden = forward_hidden(self.pretrained_model, inputs)
        return self.v_head(hidden.to(self.v_head.summary.weight.dtype)).float()

    # transformers' Trainer switches checkpointing on through this at the start of training, under its
    # transformers 5 name: a model offering only the old gradient_checkpointing_enable gets a FutureWarning,
    # then a call with keywords (every_n_layers, offload) that the old signature here did not take.
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **options):
        self.pretrained_model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=activation_checkpointing_kwargs, **options
        )

    def activation_checkpointing_disable(self):
        self.pretrained_model.activation_checkpointing_disable()

    def save_pretrained(self, directory: str | Path) -> None:
        """The backbone with its own `save_pretrained` (adapter only under LoRA), then the value head."""
        directory = Path(directory)
        self.pretrained_model.save_pretrained(directory, safe_serialization=True)
        weights = {f"v_head.{k}": v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}
        save_file(weights, str(directory / VALUE_HEAD_FILE), metadata={"format": "pt"})

    def load_value_head(self, directory: str | Path) -> None:
        path = Path(directory) / VALUE_HEAD_FILE
        if not path.is_file():
            raise ModelError(f"{directory} holds no {VALUE_HEAD_FILE}: it is not a reward model saved by stage rm")
        state = {k.removeprefix("v_head."): v for k, v in load_file(str(path)).items()}
        self.v_head.load_state_dict(state)

    def load_trained_weights(self, directory: str | Path) -> None:
        """Restore what `save_pretrained` wrote (a checkpoint being resumed) into this model in place."""
        directory = Path(directory)
        if (directory / "adapter_model.safetensors").is_file():
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.pretrained_model, load_file(str(directory / "adapter_model.safetensors")))
        else:
            self.pretrained_model.load_state_dict(_full_state_dict(directory))
        self.load_value_head(directory)


def _full_state_dict(directory: Path) -> dict[str, Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for name in files for k, v in load_file(str(directory / name)).items()}
    return load_file(str(directory / "model.safetensors"))


def last_token_values(values: Tensor, attention_mask: Tensor) -> Tensor:
    """The value at each row's last real token ([B]), for right-padded rows."""
    last = attention_mask.long().sum(-1).clamp(min=1) - 1
    return values.gather(-1, last.unsqueeze(-1)).squeeze(-1)


def load_reward_model(model_args, adapter=None) -> ValueHeadModel:
    """A saved reward model, frozen: the backbone (merged with `adapter_name_or_path` adapters) and its head.

    The head is read from the last adapter directory when there is one, else from `model_name_or_path`.
    """
    from lmforge.config.adapter_args import AdapterArguments
    from lmforge.model.loader import load_model

    adapter = adapter or AdapterArguments(finetuning_type="lora" if model_args.adapter_name_or_path else "full")
    backbone = load_model(model_args, adapter, is_trainable=False)
    model = ValueHeadModel(backbone)
    adapters = [p for p in (model_args.adapter_name_or_path or "").split(",") if p.strip()]
    model.load_value_head(adapters[-1].strip() if adapters else model_args.model_name_or_path)
    model.requires_grad_(False)
    return model.eval().to(next(backbone.parameters()).device)


@torch.no_grad()
def reward_scores(model: ValueHeadModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scores of right-padded sequences: [B] fp32."""
    return last_token_values(model(input_ids, attention_mask), attention_mask)
