"""template_roundtrip: the prompt every serving path builds is the prompt the model was trained on.

A model trained on one rendering and served with another (a missing system prompt, a different assistant header,
a space the tokenizer splits differently) answers worse in a way no loss curve shows. For each held-out prompt
the token ids of four renders are compared:

1. training: the run's own template (its `template`, `enable_thinking` and `default_system` from
   lmforge_run.json; the serving template when the model has no run info), `encode_turns` of the conversation with
   its answer, the ids before that answer: what the model was trained on, whatever the check config serves with;
2. chat: `ChatEngine.prompt_ids`, what `lmforge chat` sends;
3. export: the exported model's own `chat_template` through `apply_chat_template(add_generation_prompt=True)`,
   what plain transformers (and servers reading the chat template) send;
4. api: the request parsed by the API's protocol and rendered as the server renders it; the server does not
   return prompt ids, so its reported `usage.prompt_tokens` is compared with the training render's length too.

Value: the share of prompts whose four renders are identical; anything below 1.0 fails. The exported
generation_config must also list the template's stop ids as eos, or a merged model served by others never stops.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.check.probe import FAIL, PROBES, Example, Probe, ProbeResult


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two id lists differ (the shorter one's length when one is a prefix), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _ids(encoded) -> list[int]:
    """apply_chat_template's ids, whether it returns a list or (transformers 5) a BatchEncoding."""
    if hasattr(encoded, "keys") and "input_ids" in encoded.keys():
        encoded = encoded["input_ids"]
    return list(encoded)


def trained_render(ctx, tokenizer, serving):
    """(template, default_system) the run was trained with, from its lmforge_run.json; the serving ones when the
    model has no run info (nothing else is known of its training)."""
    from lmforge.data.templates import resolve_template
    from lmforge.run_info import trained_setting, trained_template

    paths = (ctx.cfg.model.adapter_name_or_path, ctx.cfg.model.model_name_or_path)
    name = trained_template(*paths)
    if name is None:
        return serving, ctx.default_system
    thinking = trained_setting("enable_thinking", *paths)
    template = resolve_template(name, tokenizer, True if thinking is None else bool(thinking))
    return template, trained_setting("default_system", *paths) or ""


def run_template_roundtrip(ctx, settings: dict) -> ProbeResult:
    from transformers import AutoTokenizer, GenerationConfig

    from lmforge.inference.api.protocol import ChatCompletionRequest
    from lmforge.inference.engine import to_conversation
    from lmforge.types import Message, Role

    engine = ctx.tuned()
    tokenizer, template = engine.tokenizer, engine.template
    trained, trained_system = trained_render(ctx, tokenizer, template)
    exported = ctx.exported_dir()
    exported_tokenizer = AutoTokenizer.from_pretrained(exported)
    url = settings["query_api"]
    samples = ctx.samples(settings["samples"])
    same, examples = 0, []
    for sample in samples:
        conv = to_conversation(sample.messages)
        if not conv.system:
            conv = replace(conv, system=trained_system)
        answer = sample.answer or "ok"  # the prompt's ids do not depend on the answer; a placeholder for generated
        full = replace(conv, messages=[*conv.messages, Message(Role.ASSISTANT, answer)])
        renders = {"training": trained.encode_turns(tokenizer, full)[-1][0],
                   "chat": engine.prompt_ids(sample.messages),
                   "export": _ids(exported_tokenizer.apply_chat_template(sample.messages, add_generation_prompt=True,
                                                                         tokenize=True)),
                   "api": engine.prompt_ids(ChatCompletionRequest.model_validate(
                       {"model": "check", "messages": sample.messages}).openai_messages())}
        wrong = [name for name, ids in renders.items() if ids != renders["training"]]
        if url:
            served = ctx.api_chat(sample.messages, 1)["usage"]["prompt_tokens"]
            if served != len(renders["training"]):
                wrong.append(f"api usage.prompt_tokens {served} != {len(renders['training'])}")
        if not wrong:
            same += 1
            continue
        notes = []
        for name in wrong:
            ids = renders.get(name)
            if ids is None:
                notes.append(name)
                continue
            at = first_difference(renders["training"], ids)
            notes.append(f"{name} differs from training at token {at}: "
                         f"{tokenizer.decode(renders['training'][at:at + 8])!r} vs {tokenizer.decode(ids[at:at + 8])!r}")
        examples.append(Example(sample.source, tokenizer.decode(renders["training"]), tokenizer.decode(
            renders[wrong[0]] if wrong[0] in renders else renders["chat"]), note="; ".join(notes)))
    value = same / len(samples) if samples else 0.0
    eos = GenerationConfig.from_pretrained(exported).eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    missing = [i for i in template.stop_token_ids(tokenizer) if i not in eos]
    result = ProbeResult.judge("template_roundtrip", value, settings, unit="share of prompts rendered identically by "
                               "training, chat, export chat_template and API", examples=examples[:settings["examples"]],
                               details={"prompts": len(samples), "identical": same, "stop_ids": template.stop_token_ids(
                                   tokenizer), "exported_eos_ids": sorted(eos), "api_ids": "rendered through the API "
                                   "protocol and the engine (the server does not return ids); usage.prompt_tokens "
                                   "compared" if url else "rendered through the API protocol and the engine"})
    if missing:
        result.verdict = FAIL
        result.examples.insert(0, Example(str(exported / "generation_config.json"), "", str(sorted(eos)), note=(
            f"the template's stop ids {missing} ({tokenizer.convert_ids_to_tokens(missing)}) are not eos_token_id "
            "of the exported generation config: generation there would not stop")))
    return result


PROBES.add("template_roundtrip", Probe(
    name="template_roundtrip",
    summary="training, chat, exported chat_template and API render the same prompt ids; export stops on the stop ids",
    run=run_template_roundtrip,
    defaults={"fail_below": 1.0, "query_api": True, "examples": 5}))
