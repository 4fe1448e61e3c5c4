"""Decoding settings for chat, serving and predict-with-generate."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationArguments:
    do_sample: bool = field(default=True, metadata={"help": "Sample; false means greedy (or beam) decoding."})
    temperature: float = field(default=0.95, metadata={"help": "Softmax temperature when sampling."})
    top_p: float = field(default=0.7, metadata={"help": "Nucleus sampling mass."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beam count (1 = no beam search)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Most tokens generated per reply."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty > 1 discourages repeats."})
    length_penalty: float = field(default=1.0, metadata={"help": "Beam-search length penalty."})
    skip_special_tokens: bool = field(default=True, metadata={"help": "Drop special tokens when decoding."})

    def to_generate_kwargs(self) -> dict:
        kwargs = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "length_penalty": self.length_penalty,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs
