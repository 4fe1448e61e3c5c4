"""What a probe works with: the model (and its base), the template, held-out samples, greedy generation.

    ctx = CheckContext(cfg, output_dir)
    samples = ctx.samples(24)                                   # held-out, deterministic for ctx.seed
    answers = ctx.generate(ctx.tuned(), [s.messages for s in samples], max_new_tokens=64)
    answers[0].text, answers[0].token_ids, answers[0].stopped
    ctx.base()                                                  # the base model (same template), or None
    ctx.exported_dir(), ctx.api_url()                           # the merged export, the running API server

Everything heavy is loaded lazily and once, so a probe pays only for what it uses and probes share the loads.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.config.adapter_args import HasAdapter
from lmforge.config.check_args import CheckSettings
from lmforge.config.data_args import DataArguments
from lmforge.config.export_args import ExportArguments
from lmforge.config.finetuning_args import FinetuningArguments
from lmforge.config.freeze_args import FreezeArguments
from lmforge.config.generation_args import GenerationArguments
from lmforge.config.lora_args import LoraArguments
from lmforge.config.model_args import ModelArguments
from lmforge.config.quantization_args import QuantizationArguments
from lmforge.run_info import read_run_info, trained_template

if TYPE_CHECKING:
    from lmforge.inference.engine import ChatEngine

TRAINING_SEED = 42  # transformers' default seed: a run whose lmforge_run.json predates its recorded `seed`
"""transformers' default `seed`: the run's validation split is redrawn with it (lmforge_run.json does not record
the seed, so a run trained with another seed gets a different, still never-trained-on-by-chance, sample)."""

GENERIC_PROMPTS = (
    "Name a colour.", "What is 2 + 3?", "Say hello in French.", "List three fruits.", "What day comes after Monday?",
    "Write one sentence about the sea.", "Give a synonym for 'happy'.", "What is the capital of Italy?",
    "Count from one to five.", "Describe a cat in five words.", "What is the opposite of 'cold'?",
    "Translate 'thank you' into Spanish.", "Name a planet.", "Finish the sentence: The sky is",
    "What is 10 minus 4?", "Suggest a name for a dog.", "Spell the word 'house' backwards.",
    "Which is bigger, 7 or 9?", "Give one tip for sleeping well.", "What colour is grass?",
    "Name a musical instrument.", "What do bees make?", "Write a greeting for a birthday card.",
    "How many legs does a spider have?", "Name a month with 30 days.", "What is water made of?",
    "Reply with the word 'yes'.", "Summarise: 'The meeting moved to Friday.'", "Name a vegetable.",
    "What is 3 times 3?", "Give an example of a verb.", "Answer briefly: why is the sky blue?",
)
"""Prompts for a check given only a model: short, answerable by any chat model, ending well before 64 tokens."""


@dataclass(frozen=True)
class CheckConfig(HasAdapter):
    """The groups `lmforge check` reads."""

    model: ModelArguments
    data: DataArguments
    check: CheckSettings
    finetuning: FinetuningArguments = FinetuningArguments()
    lora: LoraArguments = LoraArguments()
    freeze: FreezeArguments = FreezeArguments()
    quantization: QuantizationArguments = QuantizationArguments()
    generation: GenerationArguments = GenerationArguments()
    source: str = ""

    def inference(self, model: ModelArguments | None = None, data: DataArguments | None = None,
                  export: ExportArguments | None = None):
        """The InferenceConfig that `lmforge chat` / `api` / `export` would get (model and data replaceable)."""
        from lmforge.config.loader import InferenceConfig

        return InferenceConfig(model=model or self.model, data=data or self.data, finetuning=self.finetuning,
                               generation=self.generation, export=export or ExportArguments(), lora=self.lora,
                               freeze=self.freeze, quantization=self.quantization, source=self.source)


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # the answer's ids, the stop token not included
    stopped: bool  # ended with a stop token before max_new_tokens


@dataclass
class Sample:
    source: str  # "<file>:<record index>", or "generated:<seed>:<i>"
    messages: list[dict]  # the prompt turns (system/user...), OpenAI style
    answer: str  # the reference reply ("" for generated prompts)


@dataclass
class CheckContext:
    cfg: CheckConfig
    output_dir: Path
    notes: list[str] = field(default_factory=list)  # what the report should say about how the check ran
    drawn: dict[int, list[str]] = field(default_factory=dict)  # samples(n) -> the sources it returned
    _cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.work_dir = self.output_dir / "work"
        self.seed = self.cfg.check.seed
        paths = [p.strip() for p in (self.cfg.model.adapter_name_or_path or "").split(",") if p.strip()]
        self.run_info: dict | None = next(
            (info for p in [*reversed(paths), self.cfg.model.model_name_or_path] if (info := read_run_info(p))), None)

    # -- settings and randomness ---------------------------------------------------------------------------
    def settings(self, probe_name: str) -> dict:
        """The probe's defaults with the YAML's `check.<probe>` over them (plus samples / max_new_tokens)."""
        check = self.cfg.check
        return {"samples": check.samples, "max_new_tokens": check.max_new_tokens, **check.settings.get(probe_name, {})}

    def rng(self, probe_name: str) -> random.Random:
        # a hash, not hash(): Python salts str hashes per process, and the draw must repeat across runs
        digest = hashlib.sha256(f"{self.seed}:{probe_name}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    # -- template and tokenizer (no model load) ----------------------------------------------------------
    @property
    def template_name(self) -> str | None:
        return self.cfg.data.template or trained_template(self.cfg.model.adapter_name_or_path,
                                                          self.cfg.model.model_name_or_path)

    @property
    def tokenizer(self):
        if "tuned" in self._cache:
            return self._cache["tuned"].tokenizer
        if "tokenizer" not in self._cache:
            from lmforge.model.tokenizer import load_tokenizer

            self._cache["tokenizer"] = load_tokenizer(self.cfg.model)
        return self._cache["tokenizer"]

    @property
    def template(self):
        """The run's template, resolved as ChatEngine resolves it."""
        if "tuned" in self._cache:
            return self._cache["tuned"].template
        if "template" not in self._cache:
            from lmforge.data.templates import resolve_template
            from lmforge.inference.engine import thinking_setting

            self._cache["template"] = resolve_template(self.template_name, self.tokenizer,
                                                       thinking_setting(self.cfg, self.template_name))
        return self._cache["template"]

    @property
    def default_system(self) -> str:
        """The system prompt given to conversations without one, as ChatEngine (and training) give it."""
        from lmforge.inference.engine import serving_default_system

        return serving_default_system(self.cfg, self.template_name)

    # -- models -------------------------------------------------------------------------------------------
    def tuned(self) -> ChatEngine:
        """The model with its adapter (merged at load), as `lmforge chat` loads it."""
        if "tuned" not in self._cache:
            from lmforge.inference.engine import ChatEngine

            self._cache["tuned"] = ChatEngine(self.cfg.inference())
        return self._cache["tuned"]

    @property
    def base_path(self) -> str | None:
        model = self.cfg.model
        if model.adapter_name_or_path:
            return model.model_name_or_path
        base = (self.run_info or {}).get("base_model")
        if base and Path(base).resolve() != Path(model.model_name_or_path).resolve() and Path(base).exists():
            return base
        return None

    def base(self) -> ChatEngine | None:
        """The base model with the tuned model's template and default_system, or None when there is none."""
        if "base" not in self._cache:
            path = self.base_path
            engine = None
            if path is not None:
                from lmforge.inference.engine import ChatEngine

                # the template and system prompt named, since a base directory has no lmforge_run.json to say them
                model = replace(self.cfg.model, model_name_or_path=path, adapter_name_or_path=None)
                data = replace(self.cfg.data, template=self.template_name, default_system=self.default_system or None)
                engine = ChatEngine(self.cfg.inference(model=model, data=data))
            self._cache["base"] = engine
        return self._cache["base"]

    def exported_dir(self) -> Path:
        """The model + adapter merged and written by `lmforge export` (once, into work_dir/export)."""
        if "export" not in self._cache:
            from lmforge.export.merge import export_model

            export = ExportArguments(export_dir=str(self.work_dir / "export"), export_overwrite=True)
            self._cache["export"] = export_model(self.cfg.inference(export=export))
        return self._cache["export"]

    def exported(self) -> ChatEngine:
        """The exported model loaded as `lmforge chat` would load it (its own chat template and run info)."""
        if "exported" not in self._cache:
            from lmforge.inference.engine import ChatEngine

            model = replace(self.cfg.model, model_name_or_path=str(self.exported_dir()), adapter_name_or_path=None)
            self._cache["exported"] = ChatEngine(self.cfg.inference(model=model))
        return self._cache["exported"]

    def api_url(self) -> str:
        """http://127.0.0.1:PORT of lmforge's API app serving the tuned engine (uvicorn on a thread, started once).

        In process rather than a `lmforge api` subprocess: the same app, protocol, scheduler and decoding, without
        loading the model a second time; the engine is the one `lmforge api CONFIG` builds from the same config.
        """
        if "api" not in self._cache:
            import uvicorn

            from lmforge.inference.api.app import create_app

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(create_app(self.tuned()), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the API server did not start")
                time.sleep(0.02)
            self._cache["api"] = (server, thread, f"http://127.0.0.1:{port}")
        return self._cache["api"][2]

    def api_chat(self, messages: list[dict], max_tokens: int) -> dict:
        """The API server's JSON reply to a greedy (temperature 0) chat completion request."""
        import json
        import urllib.request

        body = json.dumps({"model": self.tuned().model_name, "messages": messages, "max_tokens": max_tokens,
                           "temperature": 0}).encode()
        request = urllib.request.Request(f"{self.api_url()}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as reply:
            return json.loads(reply.read())

    def close(self) -> None:
        """Stop the API server, if one was started."""
        if "api" in self._cache:
            server, thread, _ = self._cache.pop("api")
            server.should_exit = True
            thread.join(timeout=30)

    # -- generation ---------------------------------------------------------------------------------------
    def generate(self, engine: ChatEngine, conversations: list[list[dict]], max_new_tokens: int | None = None,
                 batch_size: int = 8) -> list[Generation]:
        """Greedy answers through the batching engine, `batch_size` at a time, each ended by the template's stop ids."""
        from lmforge.eval.predict import generate_answers

        limit = max_new_tokens or self.cfg.check.max_new_tokens
        prompts = [engine.prompt_ids(messages) for messages in conversations]
        # the config's decoding (repetition_penalty, ...) made greedy, as the API makes it for temperature 0
        params = engine.sampling_params(do_sample=False, max_new_tokens=limit)
        ids = generate_answers(engine.model, prompts, params, batch_size)
        skip = engine.generation.skip_special_tokens
        # generate_answers cuts each answer at its stop id; one that never stopped is exactly `limit` long
        return [Generation(engine.tokenizer.decode(row, skip_special_tokens=skip), row, len(row) < limit)
                for row in ids]

    # -- data ---------------------------------------------------------------------------------------------
    def samples(self, n: int) -> list[Sample]:
        """`n` held-out samples (fewer when the data has fewer), deterministic for the seed."""
        if "pool" not in self._cache:
            self._cache["pool"] = self._sample_pool()
        pool = self._cache["pool"]
        picked = range(len(pool)) if len(pool) <= n else sorted(random.Random(self.seed).sample(range(len(pool)), n))
        drawn = [pool[i] for i in picked]
        self.drawn[n] = [s.source for s in drawn]  # for the report: which records the probes asked
        return drawn

    def _sample_pool(self) -> list[Sample]:
        data = self.cfg.data
        run_data = (self.run_info or {}).get("data") or {}
        if data.eval_dataset:
            self.notes.append(f"samples: eval_dataset {data.eval_dataset}")
            return self._load(data.eval_dataset, data.dataset_dir, held_out="all")
        dataset = data.dataset or run_data.get("dataset")
        if dataset:
            own = bool(data.dataset)
            dataset_dir = data.dataset_dir if own else run_data.get("dataset_dir", data.dataset_dir)
            val_size = data.val_size if own else run_data.get("val_size")
            return self._load(dataset, dataset_dir, held_out=val_size,
                              max_samples=(data.max_samples if own else run_data.get("max_samples")))
        self.notes.append(f"samples: no data known (no eval_dataset, dataset or run data); {len(GENERIC_PROMPTS)} "
                          f"generic prompts")
        order = list(range(len(GENERIC_PROMPTS)))
        self.rng("generated").shuffle(order)
        return [Sample(f"generated:{self.seed}:{i}", [{"role": "user", "content": GENERIC_PROMPTS[k]}], "")
                for i, k in enumerate(order)]

    def _load(self, names: str, dataset_dir: str | None, held_out: float | int | str | None,
              max_samples: int | None = None) -> list[Sample]:
        """Samples of the named datasets: every record (`held_out` "all": eval data), the validation split
        `held_out` (val_size) redrawn as training drew it, or, for training data without a split, its last records."""
        from lmforge.data.dataset_info import resolve_datasets
        from lmforge.data.loading import load_conversations
        from lmforge.data.splits import split_train_eval

        training_seed = (self.run_info or {}).get("seed", TRAINING_SEED)
        listed = [n.strip() for n in str(names).split(",") if n.strip()]
        convs, drops = load_conversations(listed, dataset_dir, stage="sft", max_samples=max_samples,
                                          seed=training_seed)
        specs = resolve_datasets(listed, dataset_dir)
        # a row is its file's record only for one file read whole; else the source names the row of the merge
        whole = (len(specs) == 1 and len(specs[0].paths) == 1 and not specs[0].num_samples and not max_samples
                 and not sum(d.total for d in drops))
        where = (lambda i: f"{specs[0].paths[0]}:{i}") if whole else (lambda i: f"{','.join(listed)}:row {i}")
        rows = list(range(len(convs)))
        if held_out == "all":
            pass  # eval data: every record is held out
        elif held_out:
            # train_test_split's draw depends only on the length and the seed: an index column rides along
            _, evaluation = split_train_eval(convs.add_column("_row", rows), held_out, training_seed)
            rows = sorted(evaluation["_row"])
            self.notes.append(f"samples: the run's validation split (val_size {held_out}, seed {training_seed}) "
                              f"of {','.join(listed)}: {len(rows)} records")
        else:
            rows = rows[-max(self.cfg.check.samples, 1):]
            self.notes.append(f"samples: {','.join(listed)} has no held-out split (val_size unset): its last "
                              f"{len(rows)} records, which the run trained on")
        samples = []
        for i in rows:
            sample = _as_sample(convs[i], where(i))
            if sample is not None:
                samples.append(sample)
        return samples


def _as_sample(row: dict, source: str) -> Sample | None:
    """A conversation row -> its prompt turns and last answer; None when it does not end with an answer."""
    messages = row["messages"]
    if len(messages) < 2 or messages[-1]["role"] not in ("assistant", "function"):
        return None
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    if row.get("system"):
        prompt.insert(0, {"role": "system", "content": row["system"]})
    return Sample(source, prompt, messages[-1]["content"])
