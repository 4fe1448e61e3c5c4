"""The final hidden states of a causal LM, without computing its vocabulary logits.

    outputs, hidden = forward_hidden(model, {"input_ids": ids, "attention_mask": mask, "use_cache": False})

Used wherever the output projection is applied separately (the chunked token loss) or not at all (a value
head, sequence log-probs of dpo and kto).
"""

from __future__ import annotations

from torch import Tensor, nn


def forward_hidden(model: nn.Module, inputs: dict) -> tuple[object, Tensor]:
    """Run a causal LM with its output projection skipped; return (outputs, final hidden states [B, T, H]).

    Why a pre-hook rather than calling the inner decoder: it works the same through PEFT, DDP and FSDP
    wrappers and for every architecture, which name their decoder differently.
    """
    head = _unwrap(model).get_output_embeddings()
    captured: dict[str, Tensor] = {}

    def keep_hidden_skip_projection(module, args):
        captured["hidden"] = args[0]
        return (args[0][..., :0, :],)

    handle = head.register_forward_pre_hook(keep_hidden_skip_projection)
    try:
        outputs = model(**inputs)
    finally:
        handle.remove()
    return outputs, captured["hidden"]


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
