"""A model, its template and decoding settings behind one object: `reply` and `stream` for a conversation.

    engine = ChatEngine(load_inference_config("examples/chat.yaml"))
    engine.reply([{"role": "user", "content": "Hi"}])                 # the whole answer
    for piece in engine.stream([{"role": "user", "content": "Hi"}]):  # the answer as it is generated
        print(piece, end="")

The template is the config's `template`, else the one the run was trained with (`lmforge_run.json` in the
adapter or model directory), else the tokenizer's own chat template. Adapters (`adapter_name_or_path`) are
merged into the base at load. Generation is serialised by a lock: concurrent callers (the API server's
requests) each get their own complete answer, never an interleaving of two.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from lmforge.errors import DataError
from lmforge.run_info import trained_setting, trained_template
from lmforge.types import Conversation, Message, Role

_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "function": Role.FUNCTION, "observation": Role.OBSERVATION,
          "tool": Role.OBSERVATION}


def to_conversation(messages: list[dict], system: str = "") -> Conversation:
    """OpenAI-style messages (a leading system message allowed) -> a Conversation ending in a prompt turn."""
    turns = list(messages)
    if turns and turns[0].get("role") == "system":
        system, turns = str(turns[0].get("content") or ""), turns[1:]
    converted = []
    for i, message in enumerate(turns):
        role = _ROLES.get(message.get("role"))
        content = message.get("content")
        if role is None:
            raise DataError(f"message {i}: role must be user, assistant or tool, got {message.get('role')!r}")
        if not isinstance(content, str):
            raise DataError(f"message {i}: content must be text")
        converted.append(Message(role, content))
    return Conversation(converted, system=system)


def thinking_setting(cfg, template_name: str | None) -> bool:
    """enable_thinking for prompts: false when the config says so, else the trained run's setting when the
    template is the run's (lmforge_run.json), else true. The config's default (true) cannot tell an unset key
    from a chosen one, so only its false overrides the run."""
    if not cfg.data.enable_thinking:
        return False
    paths = (cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
    trained = trained_setting("enable_thinking", *paths)
    if trained is not None and template_name == trained_template(*paths):
        return bool(trained)
    return True


def serving_default_system(cfg, template_name: str | None) -> str:
    """The system prompt for conversations without one: the config's `default_system`, else the trained run's when
    the template is the run's (as training gave it to every sample without one, and as the exported chat template
    writes it), else none."""
    paths = (cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
    if cfg.data.default_system:
        return cfg.data.default_system
    return (trained_setting("default_system", *paths) if template_name == trained_template(*paths) else None) or ""


class ChatEngine:
    def __init__(self, cfg):
        from lmforge.model.loader import load_model
        from lmforge.model.tokenizer import load_tokenizer
        from lmforge.data.templates import resolve_template

        adapters = bool(cfg.model.adapter_name_or_path)
        adapter = replace(cfg.adapter, finetuning_type="lora" if adapters else "full")
        self.model = load_model(cfg.model, adapter, is_trainable=False)
        self.tokenizer = load_tokenizer(cfg.model)
        template_name = cfg.data.template or trained_template(
            cfg.model.adapter_name_or_path, cfg.model.model_name_or_path)
        self.template = resolve_template(template_name, self.tokenizer, thinking_setting(cfg, template_name))
        self.generation = cfg.generation
        self.default_system = serving_default_system(cfg, template_name)
        self.model_name = Path(cfg.model.adapter_name_or_path or cfg.model.model_name_or_path).name
        self.stop_ids = self.template.stop_token_ids(self.tokenizer)
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt_ids(self, messages: list[dict] | Conversation, system: str | None = None) -> list[int]:
        conv = messages if isinstance(messages, Conversation) else to_conversation(messages, system or "")
        if not conv.system:
            conv = replace(conv, system=system or self.default_system)
        return self.template.encode_prompt(self.tokenizer, conv)

    def _generate_kwargs(self, prompt: list[int], overrides: dict) -> dict:
        kwargs = self.generation.to_generate_kwargs()
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        if kwargs.get("temperature") == 0:  # OpenAI's "greedy"
            kwargs["do_sample"] = False
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        ids = torch.tensor([prompt], device=self.device)
        return {**kwargs, "input_ids": ids, "attention_mask": torch.ones_like(ids),
                "eos_token_id": self.stop_ids or None, "pad_token_id": self.tokenizer.pad_token_id}

    def reply(self, messages, system: str | None = None, **overrides) -> str:
        """The whole answer; `overrides`: generate() arguments (max_new_tokens, temperature, top_p, ...)."""
        return "".join(self.stream(messages, system, **overrides))

    def stream(self, messages, system: str | None = None, stop: list[str] | None = None,
               **overrides) -> Completion:
        """The answer piece by piece as tokens are generated; stops at a stop token or a `stop` string."""
        return self.complete(self.prompt_ids(messages, system), stop, **overrides)

    def complete(self, prompt: list[int], stop: list[str] | None = None, seed: int | None = None,
                 cancel: threading.Event | None = None, **overrides) -> Completion:
        """The continuation of already encoded `prompt` ids, as a `Completion` to iterate. Setting `cancel`
        (from any thread) ends generation after the current token, even while no piece is due."""
        return Completion(self, prompt, self._generate_kwargs(prompt, overrides), [s for s in stop or () if s], seed,
                          cancel)


class Completion:
    """The pieces of one answer as it is generated. Once iterated: `finish_reason` ("stop": a stop token or
    string ended it, "length": max_new_tokens did, "cancelled": the `cancel` event did), `prompt_tokens` and
    `completion_tokens`.

    Closing the iteration early (break, `close()`) ends generation at the next token and releases the engine.
    So does setting `cancel`, which matters because a piece can be long in coming: the streamer holds text
    back until a word ends, and so does a stop string's look-ahead, for the whole answer if need be.
    """

    def __init__(self, engine: ChatEngine, prompt: list[int], kwargs: dict, stops: list[str], seed: int | None,
                 cancel: threading.Event | None = None):
        self.engine, self.kwargs, self.stops, self.seed = engine, kwargs, stops, seed
        self.cancel = cancel or threading.Event()
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._pieces = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        self._pieces.close()

    def _generate(self) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        engine = self.engine
        streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True,
                                        skip_special_tokens=engine.generation.skip_special_tokens)
        finished = threading.Event()  # set when a stop string ended the answer (or the reader left): stop too
        kwargs = {**self.kwargs, "streamer": streamer,
                  "stopping_criteria": StoppingCriteriaList([_UntilSet(finished, self.cancel)])}
        with engine._lock:
            outcome: dict = {}

            def run():
                try:
                    with torch.no_grad():
                        if self.seed is not None:
                            torch.manual_seed(self.seed)
                        outcome["ids"] = engine.model.generate(**kwargs)[0, self.prompt_tokens:].tolist()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    outcome["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            # Text that could be the start of a stop string is held back until the next piece decides it.
            hold = max((len(s) for s in self.stops), default=1) - 1
            text, sent, stopped = "", 0, False
            try:
                for piece in streamer:
                    text += piece
                    cut = min((text.find(s) for s in self.stops if s in text), default=-1)
                    if cut >= 0:
                        stopped = True
                        finished.set()
                        if cut > sent:
                            yield text[sent:cut]
                        sent = len(text)
                        break
                    if len(text) - hold > sent:
                        yield text[sent:len(text) - hold]
                        sent = len(text) - hold
                if sent < len(text):
                    yield text[sent:]
            finally:
                finished.set()
                worker.join()
            if "error" in outcome:
                raise outcome["error"]
            ids = outcome.get("ids", [])
            stop_ids = set(engine.stop_ids)
            self.completion_tokens = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
            ended_by_token = bool(ids) and ids[self.completion_tokens - 1] in stop_ids
            cancelled = self.cancel.is_set() and self.completion_tokens < self.kwargs.get("max_new_tokens", 0)
            self.finish_reason = "stop" if stopped or ended_by_token else "cancelled" if cancelled else "length"


class _UntilSet:
    """A transformers stopping criterion, asked after every token, that ends generation once an event is set."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        done = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
