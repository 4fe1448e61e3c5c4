"""Probe `quantization`: does the tuned model survive weight-only int8 and 4-bit quantization?

    check:
      quantization: {samples: 16, fail_below: 0.5}

What: the tuned model (adapters merged; `ctx.exported_dir()` where the framework offers it, else merged in
memory and saved under the check's work dir) loaded again through bitsandbytes on the CPU, weights only: int8
(`load_in_8bit`, bitsandbytes' LLM.int8 with its default outlier threshold) and 4-bit NF4 (`load_in_4bit`,
`bnb_4bit_quant_type: nf4`, float32 compute). Its greedy answers to the held-out prompts (`ctx.samples`) are
compared with the full-precision model's.

Why: a fine-tuned model is often served quantized (bitsandbytes, GGUF, AWQ); fine-tunes with large or
outlier-heavy weight updates can lose their behaviour in 4 bits while looking fine in full precision.

How: agreement = share of prompts whose quantized greedy answer equals the full-precision answer exactly;
KL = mean KL(full || quantized) in nats per token over the next-token distributions of the full-precision
answer's tokens (teacher-forced: prompt + the full model's answer fed to both models). value = the 4-bit
agreement (FAIL below `fail_below`, WARN below `warn_below`); details give both bit widths' agreement and KL.

bitsandbytes' CPU inference kernel for 4-bit weights (eval mode) packs output rows in blocks of 32; a model
with a narrower or unaligned projection (the tiny test models' 16-wide key/value projections) cannot use it.
Then the quantized model runs in train mode with every dropout set to 0 — the same function, computed by
dequantizing and multiplying as QLoRA training does (tests/model/test_qlora.py) — and the details say so.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
from pathlib import Path

import torch

from lmforge.check.probe import PROBES, Example, Probe, ProbeResult
from lmforge.check.probes.forgetting import next_token_divergence

NAME = "quantization"


def full_precision_dir(ctx) -> Path:
    """A directory holding the tuned model's merged full-precision weights (config + safetensors)."""
    exported = getattr(ctx, "exported_dir", None)
    if callable(exported):
        return Path(exported())
    out = Path(ctx.work_dir) / "quantization" / "full_precision"
    if (out / "config.json").is_file():
        return out
    model = ctx.tuned().model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: merge a copy, the engine keeps its adapter
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    return out


def load_quantized(path: Path, bits: int):
    """(model, mode) of the weights in `path` quantized to `bits` by bitsandbytes on the CPU; mode is "eval", or
    "train (dropout 0)" where the 4-bit CPU inference kernel refuses the layer widths (see the module doc)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 8:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map={"": "cpu"},
                                                 dtype=torch.float32).eval()
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[0, 1]]))
        return model, "eval"
    except (AssertionError, RuntimeError):
        _no_dropout(model)
        return model.train(), "train (dropout 0): the CPU 4-bit inference kernel refused these layer widths"


def _no_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # attention modules keep a float
            module.attention_dropout = 0.0


@contextlib.contextmanager
def _quiet_int8_casts():
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast from float32 to float16" at every 8-bit matmul call
    on the CPU (autograd/_functions.py, a logger warning): expected here, and hundreds of lines."""
    log = logging.getLogger("bitsandbytes.autograd._functions")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def run_quantization(ctx, settings: dict) -> ProbeResult:
    if importlib.util.find_spec("bitsandbytes") is None:
        return ProbeResult.skipped(NAME, "bitsandbytes is not installed (pip install bitsandbytes)")
    tuned = ctx.tuned()
    if getattr(tuned.model, "is_quantized", False) or getattr(tuned.model.config, "quantization_config", None):
        return ProbeResult.skipped(NAME, "the tuned model is itself quantized")
    samples = ctx.samples(int(settings["samples"]))
    if not samples:
        return ProbeResult.skipped(NAME, "no prompts (ctx.samples gave none)")
    conversations = [s.messages for s in samples]
    max_new = settings["max_new_tokens"]
    full = ctx.generate(tuned, conversations, max_new_tokens=max_new)
    prompts = [tuned.prompt_ids(c) for c in conversations]
    # teacher-forced: the position before each answer token predicts it; an empty answer: the first prediction
    token_lists = [(p + list(g.token_ids))[:len(p) + max(len(g.token_ids), 1) - 1] for p, g in zip(prompts, full)]
    starts = [len(p) - 1 for p in prompts]
    path = full_precision_dir(ctx)
    details: dict = {"samples": len(samples), "weights": str(path)}
    examples, agreement = [], {}
    for bits in (8, 4):
        with _quiet_int8_casts():
            model, mode = load_quantized(path, bits)
            engine = copy.copy(tuned)  # the same tokenizer, template and stop tokens, the quantized weights
            engine.model = model
            answers = ctx.generate(engine, conversations, max_new_tokens=max_new)
            same, kl, positions = next_token_divergence(tuned.model, model, token_lists, starts)
        equal = [a.text == f.text for a, f in zip(answers, full)]
        agreement[bits] = sum(equal) / len(equal)
        details[f"int{bits}"] = {"agreement": agreement[bits], "mean_kl": kl, "next_token_agreement": same,
                                 "positions": positions, "mode": mode}
        if bits == 4:
            examples = [Example(s.source, s.messages[-1]["content"], a.text, f.text, note="4-bit answer differs")
                        for s, a, f, eq in zip(samples, answers, full, equal) if not eq][:settings.get("examples", 5)]
        del model, engine
    return ProbeResult.judge(NAME, agreement[4], settings,
                             unit=f"share of greedy answers unchanged in 4-bit NF4 (int8: {agreement[8]:.2f}; KL "
                                  f"{details['int8']['mean_kl']:.2e} / {details['int4']['mean_kl']:.2e} nats/token)",
                             examples=examples, details=details)


PROBES.add(NAME, Probe(
    name=NAME, summary="weight-only int8 and 4-bit (bitsandbytes, CPU): greedy answer agreement and KL vs full",
    run=run_quantization,
    defaults={"samples": 16, "max_new_tokens": 24, "fail_below": 0.5, "warn_below": 0.8, "examples": 5}))
