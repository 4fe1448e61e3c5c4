"""Samples as the trainer sees them: the text after the template, trained tokens marked, truncation shown.

    samples = preview_samples(cfg, tokenizer, template, count=3)    # `lmforge data preview CONFIG -n 3`
    print(render_terminal(samples, color=True, tokens=False))
    Path("preview.html").write_text(render_html(samples, tokens=True))

Conversations come from the loader and go through the training processors (`encode_supervised`, or
`encode_pairwise` for rm/dpo), so what is marked trained is exactly where the labels are not IGNORE_INDEX.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field

from lmforge.types import IGNORE_INDEX

TRAINED_STYLE = "\x1b[1;32m"  # bold green: the loss is computed on these tokens
MASKED_STYLE = "\x1b[2m"  # dim: context only
TOKEN_SHADES = ("", "\x1b[4m")  # with --tokens, every other token underlined
CUT_STYLE = "\x1b[1;31m"
RESET = "\x1b[0m"


@dataclass
class Rendered:
    """One sequence: (text, trained) runs, or one run per token when token boundaries are asked for."""

    title: str
    pieces: list[tuple[str, bool]]
    length: int
    full_length: int  # before truncation

    @property
    def truncated(self) -> bool:
        return self.length < self.full_length


@dataclass
class PreviewSample:
    index: int
    sides: list[Rendered] = field(default_factory=list)  # one for sft, chosen and rejected for pairs


def _pieces(tokenizer, input_ids: list[int], labels: list[int], per_token: bool) -> list[tuple[str, bool]]:
    # The label of position i is the target of position i: a token is trained when its own label is set.
    trained = [label != IGNORE_INDEX for label in labels]
    if per_token:
        return [(tokenizer.decode([tok], skip_special_tokens=False), t) for tok, t in zip(input_ids, trained)]
    runs: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):  # runs of the same kind decode together (no split characters)
        if i == len(input_ids) or trained[i] != trained[start]:
            runs.append((tokenizer.decode(input_ids[start:i], skip_special_tokens=False), trained[start]))
            start = i
    return runs


def preview_samples(cfg, tokenizer, template, count: int = 3, per_token: bool = False,
                    split: str = "train") -> list[PreviewSample]:
    from lmforge.data.loading import load_conversations
    from lmforge.data.formats import pair_from_dict
    from lmforge.data.processors.pairwise import encode_pairwise, prompt_and_response
    from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
    from lmforge.tools.data_stats import full_length
    from lmforge.stages import STAGES
    from lmforge.types import Conversation

    data = cfg.data
    names = data.dataset_names if split == "train" else data.eval_dataset_names
    stage = cfg.finetuning.stage
    convs, _ = load_conversations(names, data.dataset_dir, stage=stage, max_samples=data.max_samples,
                                  mix_strategy=data.mix_strategy, seed=cfg.training.seed,
                                  placeholders=data.placeholders)
    samples = []
    for index in range(min(count, len(convs))):
        row = convs[index]
        sample = PreviewSample(index)
        if STAGES.get(stage).data_kind == "pairwise":
            pair = pair_from_dict(row)
            if not pair.prompt.system and data.default_system:
                pair.prompt.system = data.default_system
            encoded = encode_pairwise(pair, template, tokenizer, data.cutoff_len)
            for side, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
                prompt_ids, response_ids = prompt_and_response(pair.prompt, response, template, tokenizer)
                ids, labels = encoded[f"{side}_input_ids"], encoded[f"{side}_labels"]
                sample.sides.append(Rendered(side, _pieces(tokenizer, ids, labels, per_token), len(ids),
                                             len(prompt_ids) + len(response_ids)))
        else:
            conv = Conversation.from_dict(row)
            if not conv.system and data.default_system:
                conv.system = data.default_system
            options = SupervisedOptions(data.cutoff_len, data.train_on_prompt, data.mask_history)
            example = encode_supervised(conv, template, tokenizer, options)
            ids = example["input_ids"]
            sample.sides.append(Rendered("sample", _pieces(tokenizer, ids, example["labels"], per_token), len(ids),
                                         full_length(conv, template, tokenizer)))
        samples.append(sample)
    return samples


def _cut_note(side: Rendered, cutoff_len: int) -> str:
    return f"[truncated: {side.full_length} -> {side.length} tokens by cutoff_len {cutoff_len}]"


def _styled(pieces: list[tuple[str, bool]], color: bool, per_token: bool) -> list[tuple[str, str]]:
    """(visible text, ANSI prefix) segments; without color, trained runs are wrapped in [[ ]]."""
    out = []
    for i, (text, trained) in enumerate(pieces):
        if color:
            shade = TOKEN_SHADES[i % 2] if per_token else ""
            out.append((text, (TRAINED_STYLE if trained else MASKED_STYLE) + shade))
        else:
            out.append((f"[[{text}]]" if trained else text, ""))
            if per_token and i + 1 < len(pieces):
                out.append(("|", ""))
    return out


def _lines(segments: list[tuple[str, str]], width: int | None) -> list[list[tuple[str, str]]]:
    """Segments broken into lines at newlines and, when `width` is set, at that many visible characters."""
    lines: list[list[tuple[str, str]]] = [[]]
    used = 0
    for text, style in segments:
        for k, part in enumerate(text.split("\n")):
            if k:
                lines.append([])
                used = 0
            while part:
                room = (width - used) if width else len(part)
                if room <= 0:
                    lines.append([])
                    used, room = 0, width
                chunk, part = part[:room], part[room:]
                lines[-1].append((chunk, style))
                used += len(chunk)
    return lines


def _join(line: list[tuple[str, str]], color: bool) -> str:
    return "".join(f"{style}{text}{RESET}" if color and style else text for text, style in line)


def render_terminal(samples: list[PreviewSample], cutoff_len: int, color: bool = True, per_token: bool = False,
                    width: int | None = None) -> str:
    legend = (f"{TRAINED_STYLE}trained{RESET} / {MASKED_STYLE}masked (not trained){RESET}" if color
              else "[[trained]] / masked (not trained)")
    blocks = [f"legend: {legend}" + (" ; token boundaries " + ("underlined alternately" if color else "'|'")
                                      if per_token else "")]
    for sample in samples:
        rules = []
        if len(sample.sides) == 1:
            side = sample.sides[0]
            rules.append(f"--- sample {sample.index}: {side.length} tokens ---")
            rules.append(_join_all(_lines(_styled(side.pieces, color, per_token), None), color))
            if side.truncated:
                rules.append(_cut(side, cutoff_len, color))
        else:  # side by side
            column = max(20, ((width or shutil.get_terminal_size((160, 24)).columns) - 3) // 2)
            left, right = ([*_lines(_styled(s.pieces, color, per_token), column)] for s in sample.sides)
            heads = [f"{s.title}: {s.length} tokens" for s in sample.sides]
            rules.append(f"--- sample {sample.index} ---")
            rules.append(f"{heads[0]:<{column}} | {heads[1]}")
            for k in range(max(len(left), len(right))):
                a = left[k] if k < len(left) else []
                b = right[k] if k < len(right) else []
                pad = " " * (column - sum(len(text) for text, _ in a))
                rules.append(f"{_join(a, color)}{pad} | {_join(b, color)}")
            for s in sample.sides:
                if s.truncated:
                    rules.append(f"{s.title}: " + _cut(s, cutoff_len, color))
        blocks.append("\n".join(rules))
    return "\n\n".join(blocks)


def _join_all(lines, color: bool) -> str:
    return "\n".join(_join(line, color) for line in lines)


def _cut(side: Rendered, cutoff_len: int, color: bool) -> str:
    note = _cut_note(side, cutoff_len)
    return f"{CUT_STYLE}{note}{RESET}" if color else note


def render_html(samples: list[PreviewSample], cutoff_len: int, per_token: bool = False) -> str:
    def side_html(side: Rendered) -> str:
        spans = "".join(
            f'<span class="{"t" if trained else "m"}{" tok" if per_token else ""}">{html.escape(text)}</span>'
            for text, trained in side.pieces)
        cut = f'<div class="cut">{html.escape(_cut_note(side, cutoff_len))}</div>' if side.truncated else ""
        return f"<h3>{html.escape(side.title)}: {side.length} tokens</h3><pre>{spans}</pre>{cut}"

    body = []
    for sample in samples:
        cells = "".join(f"<td>{side_html(side)}</td>" for side in sample.sides)
        body.append(f"<h2>sample {sample.index}</h2><table><tr>{cells}</tr></table>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>lmforge data preview</title><style>
body {{ font-family: sans-serif; margin: 2em; }} pre {{ white-space: pre-wrap; font-size: 14px; }}
td {{ vertical-align: top; width: 50%; padding-right: 1em; }}
.t {{ background: #c8f0c8; }} .m {{ color: #888; }} .tok {{ border-right: 1px solid #bbb; }}
.cut {{ color: #c00; font-weight: bold; }}
</style></head><body><p>Legend: <span class="t">trained</span> / <span class="m">masked (not trained)</span></p>
{"".join(body)}</body></html>
"""
