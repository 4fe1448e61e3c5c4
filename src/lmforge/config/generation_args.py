"""Decoding settings for chat, serving, predict-with-generate and the rollouts of grpo / ppo.

`temperature`, `top_p` and `top_k` left unset take the defaults of where they are used: LLaMA-Factory's (0.95,
0.7, 50) for chat, api, predict and ppo; TRL GRPOConfig's (1.0, 1.0, off) for grpo's rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationArguments:
    do_sample: bool = field(default=True, metadata={"help": "Sample; false means greedy (or beam) decoding."})
    temperature: float | None = field(
        default=None, metadata={"help": "Softmax temperature when sampling (unset: 0.95; grpo rollouts 1.0)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling mass (unset: 0.7; grpo rollouts 1.0)."})
    top_k: int | None = field(
        default=None, metadata={"help": "Sample among the k most likely tokens (unset: 50; grpo rollouts 0 = off)."})
    num_beams: int = field(default=1, metadata={"help": "Beam count (1 = no beam search)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Most tokens generated per reply."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty > 1 discourages repeats."})
    length_penalty: float = field(default=1.0, metadata={"help": "Beam-search length penalty."})
    skip_special_tokens: bool = field(default=True, metadata={"help": "Drop special tokens when decoding."})
    max_num_seqs: int = field(default=64, metadata={
        "help": "Sequences the generation engine decodes together (api, chat, predict, generative eval)."})
    max_batch_tokens: int = field(default=32768, metadata={
        "help": "Prompt + max_new_tokens of all running sequences together: bounds the KV cache; a request waits "
                "until it fits."})

    def to_generate_kwargs(self) -> dict:
        kwargs = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "length_penalty": self.length_penalty,
        }
        if self.do_sample:
            kwargs.update(self.sampling())
        return kwargs

    def sampling(self, defaults: dict | None = None) -> dict:
        """{temperature, top_p, top_k}: the values set, else `defaults` (LLaMA-Factory's when not given)."""
        defaults = CHAT_SAMPLING if defaults is None else defaults
        return {name: getattr(self, name) if getattr(self, name) is not None else defaults[name] for name in CHAT_SAMPLING}


CHAT_SAMPLING = {"temperature": 0.95, "top_p": 0.7, "top_k": 50}
"""LLaMA-Factory's generating_args defaults."""
