"""serve_parity: the model answers the same however it is served.

The adapter loaded by `lmforge chat`, the merged model `lmforge export` writes, and the running API server should
give one greedy answer to one prompt. When they do not, something between them is lost: an adapter merged into
the wrong weights, a dtype cast on export, a stop token or decoding setting the server ignores. Each held-out
prompt is answered greedily by (1) model + adapter, (2) the export loaded from disk, (3) the API server
(`/v1/chat/completions`, temperature 0, one request at a time). Answers are generated one prompt at a time (no
padding), as the server generates them.

Value: the share of prompts whose three answers are identical (the adapter's and the export's token for token,
the server's as text); anything below 1.0 fails. A greedy tie can flip between float paths (fp32 merge vs adapter
at load on some kernels): each difference names the first differing token so a tie is told from a real fault.
"""

from __future__ import annotations

import json

from lmforge.check.probe import PROBES, Example, Probe, ProbeResult
from lmforge.check.probes.template_roundtrip import first_difference


def run_serve_parity(ctx, settings: dict) -> ProbeResult:
    samples = ctx.samples(settings["samples"])
    limit = settings["max_new_tokens"]
    prompts = [s.messages for s in samples]
    tuned = ctx.generate(ctx.tuned(), prompts, limit, batch_size=1)
    exported = ctx.generate(ctx.exported(), prompts, limit, batch_size=1)
    tokenizer = ctx.tuned().tokenizer
    same, examples = 0, []
    for sample, a, e in zip(samples, tuned, exported):
        served = ctx.api_chat(sample.messages, limit)["choices"][0]["message"]["content"] or ""
        notes = []
        if a.token_ids != e.token_ids:
            at = first_difference(a.token_ids, e.token_ids)
            notes.append(f"export differs at answer token {at}: {tokenizer.decode(a.token_ids[at:at + 1])!r} "
                         f"(adapter) vs {tokenizer.decode(e.token_ids[at:at + 1])!r} (export)")
        if served != a.text:
            at = next((i for i, (x, y) in enumerate(zip(served, a.text)) if x != y), min(len(served), len(a.text)))
            notes.append(f"api differs at character {at}: {served[at:at + 20]!r} vs {a.text[at:at + 20]!r} (adapter)")
        if not notes:
            same += 1
            continue
        examples.append(Example(sample.source, json.dumps(sample.messages, ensure_ascii=False), served,
                                expected=a.text, note="; ".join(notes) + f" | export: {e.text!r}"))
    value = same / len(samples) if samples else 0.0
    return ProbeResult.judge("serve_parity", value, settings, unit="share of prompts answered identically by "
                             "model + adapter, the merged export and the API server", examples=examples[:settings["examples"]],
                             details={"prompts": len(samples), "identical": same, "max_new_tokens": limit,
                                      "export_dir": str(ctx.exported_dir())})


PROBES.add("serve_parity", Probe(
    name="serve_parity",
    summary="greedy answers of model + adapter, the merged export and the API server are identical",
    run=run_serve_parity,
    defaults={"fail_below": 1.0, "examples": 5}))
