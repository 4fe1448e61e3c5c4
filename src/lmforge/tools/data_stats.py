"""What a config's data costs before training: records kept and dropped, token lengths, truncation, the
supervised share, the padding of each batching strategy and the steps per epoch.

    report = data_statistics(cfg, tokenizer, template)       # `lmforge data stats CONFIG`

Conversations come from the loader (`load_conversations`, drops counted by reason) and are tokenized by
the training processors: lengths before truncation from `template.encode_turns`, the trained sample from
`encode_supervised` with the config's cutoff_len / train_on_prompt / mask_history, packing from
`best_fit_decreasing`. Figures are for conversation data (`Stage.data_kind`, stage sft); nothing here loads a
model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from lmforge.data.packing import best_fit_decreasing
from lmforge.data.processors.supervised import SupervisedOptions, encode_supervised
from lmforge.types import IGNORE_INDEX, Conversation

PERCENTILES = (50, 90, 99)
PAD_MULTIPLE = 8  # the collator pads rows to a multiple of 8


@dataclass
class LengthSummary:
    mean: float
    percentiles: dict[int, int]
    max: int

    @classmethod
    def of(cls, values: list[int]) -> LengthSummary:
        if not values:
            return cls(0.0, {p: 0 for p in PERCENTILES}, 0)
        ordered = sorted(values)
        return cls(sum(values) / len(values), {p: percentile(ordered, p) for p in PERCENTILES}, ordered[-1])


@dataclass
class DataStats:
    name: str
    records: int = 0  # read from the files (after num_samples / max_samples)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    prompt_lengths: list[int] = field(default_factory=list)  # before truncation, per kept sample
    response_lengths: list[int] = field(default_factory=list)
    total_lengths: list[int] = field(default_factory=list)
    trained_lengths: list[int] = field(default_factory=list)  # after truncation: what the trainer sees
    supervised_tokens: int = 0

    @property
    def kept(self) -> int:
        return len(self.trained_lengths)

    @property
    def truncated(self) -> int:
        return sum(1 for full, kept in zip(self.total_lengths, self.trained_lengths) if kept < full)

    @property
    def supervised_fraction(self) -> float:
        return self.supervised_tokens / max(sum(self.trained_lengths), 1)

    def add(self, other: DataStats) -> None:
        self.records += other.records
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for name in ("prompt_lengths", "response_lengths", "total_lengths", "trained_lengths"):
            getattr(self, name).extend(getattr(other, name))
        self.supervised_tokens += other.supervised_tokens


def percentile(ordered: list[int], p: float) -> int:
    """Nearest-rank percentile of sorted values: the smallest value with at least p% of values at or below."""
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def padding_fraction(batches: list[list[int]], lengths: list[int], multiple: int = PAD_MULTIPLE) -> float:
    """Pad positions / all positions when each batch is padded to its longest row (rounded up to `multiple`)."""
    real = padded = 0
    for batch in batches:
        width = -(-max(lengths[i] for i in batch) // multiple) * multiple
        real += sum(lengths[i] for i in batch)
        padded += width * len(batch)
    return 1 - real / padded if padded else 0.0


def batching_figures(lengths: list[int], batch_size: int, cutoff_len: int, seed: int = 0) -> dict[str, dict]:
    """Padding fraction and batch (or row) count of plain padding, length grouping and packing."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    if not lengths:
        return {}
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    generator = torch.Generator().manual_seed(seed)
    grouped = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    rows = best_fit_decreasing(lengths, cutoff_len)
    return {
        "padding": {"batches": -(-len(lengths) // batch_size),
                    "padding": padding_fraction([order[i : i + batch_size] for i in range(0, len(order), batch_size)],
                                                lengths)},
        "group_by_length": {"batches": -(-len(lengths) // batch_size),
                            "padding": padding_fraction([grouped[i : i + batch_size]
                                                         for i in range(0, len(grouped), batch_size)], lengths)},
        "packing": {"batches": -(-len(rows) // batch_size), "rows": len(rows),
                    "padding": 1 - sum(lengths) / (len(rows) * cutoff_len)},
    }


def steps_per_epoch(batches_per_device: int, gradient_accumulation: int) -> int:
    """Optimizer steps in one epoch, counted as transformers' Trainer counts them."""
    return max(batches_per_device // gradient_accumulation + int(batches_per_device % gradient_accumulation > 0), 1)


def full_length(conv: Conversation, template, tokenizer) -> int:
    """Tokens of a conversation before truncation, as the supervised processor would lay them out."""
    return sum(len(p) + len(r) for p, r in template.encode_turns(tokenizer, conv)) + int(template.efficient_eos)


def conversation_stats(name: str, convs, drops, data_args, tokenizer, template) -> DataStats:
    """Figures of one dataset's conversations (a `load_conversations` result and its DropCounter)."""
    stats = DataStats(name, records=len(convs) + drops.total, dropped=dict(drops.counts))
    options = SupervisedOptions(data_args.cutoff_len, data_args.train_on_prompt, data_args.mask_history)
    eos = 1 if template.efficient_eos else 0
    for row in convs:
        conv = Conversation.from_dict(row)
        if not conv.system and data_args.default_system:
            conv.system = data_args.default_system
        turns = template.encode_turns(tokenizer, conv)
        prompt = sum(len(p) for p, _ in turns)
        response = sum(len(r) for _, r in turns) + eos
        example = encode_supervised(conv, template, tokenizer, options)
        supervised = sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)
        if supervised == 0:  # the trainer drops it too (no response token left after truncation)
            reason = f"no response token left after cutoff_len={data_args.cutoff_len}"
            stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
            continue
        stats.prompt_lengths.append(prompt)
        stats.response_lengths.append(response)
        stats.total_lengths.append(prompt + response)
        stats.trained_lengths.append(len(example["input_ids"]))
        stats.supervised_tokens += supervised
    return stats


def data_statistics(cfg, tokenizer, template) -> list[DataStats]:
    """One DataStats per dataset of `dataset` and `eval_dataset`, then "overall" over `dataset`."""
    from lmforge.data.loading import load_conversations

    data = cfg.data
    per_dataset = []
    for name in list(dict.fromkeys(data.dataset_names + data.eval_dataset_names)):
        convs, drops = load_conversations([name], data.dataset_dir, stage=cfg.finetuning.stage,
                                          max_samples=data.max_samples,
                                          seed=cfg.training.seed, placeholders=data.placeholders)
        per_dataset.append(conversation_stats(name, convs, drops[0], data, tokenizer, template))
    overall = DataStats("overall (dataset)")
    for stats in per_dataset:
        if stats.name in data.dataset_names:
            overall.add(stats)
    return [*per_dataset, overall]


def train_count(kept: int, val_size: float) -> int:
    """Samples left for training once `val_size` is held out (a fraction rounded up, or a count)."""
    if not val_size:
        return kept
    held_out = math.ceil(val_size * kept) if val_size < 1 else int(val_size)
    return max(kept - held_out, 0)


def format_report(cfg, template_name: str, stats: list[DataStats], world_size: int = 1) -> str:
    data, training = cfg.data, cfg.training
    lines = [f"stage {cfg.finetuning.stage}, template {template_name}, cutoff_len {data.cutoff_len}; "
             "token counts from the config's tokenizer and template", ""]
    lines.append(f"{'dataset':<24}{'records':>9}{'kept':>9}{'dropped':>9}{'truncated':>11}{'supervised':>12}")
    for s in stats:
        lines.append(f"{s.name:<24}{s.records:>9,}{s.kept:>9,}{sum(s.dropped.values()):>9,}{s.truncated:>11,}"
                     f"{s.supervised_fraction:>12.1%}")
    drops = [f"  {s.name}: " + "; ".join(f"{n} {reason}" for reason, n in s.dropped.items())
             for s in stats[:-1] if s.dropped]
    if drops:
        lines += ["", "dropped records, by reason:", *drops]
    header = "".join(f"{'p' + str(p):>8}" for p in PERCENTILES)
    lines += ["", f"{'token lengths before truncation':<34}{'mean':>8}{header}{'max':>8}"]
    for s in stats:
        for part, values in (("prompt", s.prompt_lengths), ("response", s.response_lengths),
                             ("total", s.total_lengths)):
            summary = LengthSummary.of(values)
            cells = "".join(f"{summary.percentiles[p]:>8}" for p in PERCENTILES)
            lines.append(f"{(s.name if part == 'prompt' else ''):<24}{part:<10}{summary.mean:>8.1f}{cells}"
                         f"{summary.max:>8}")
    overall = stats[-1]
    samples = train_count(overall.kept, data.val_size)
    batch, accumulation = training.per_device_train_batch_size, training.gradient_accumulation_steps
    kept_lengths = overall.trained_lengths[:samples]
    figures = batching_figures(kept_lengths, batch * world_size, data.cutoff_len, seed=training.seed)
    configured = "packing" if data.packs else "group_by_length" if training.group_by_length else "padding"
    split = f" after holding out val_size {data.val_size}" if data.val_size else ""
    lines += ["", f"batching the {samples:,} training samples{split} (batch {batch} x accumulation {accumulation} "
                  f"x {world_size} device(s), rows padded to a multiple of {PAD_MULTIPLE}):",
              f"{'strategy':<30}{'batches':>9}{'padding':>9}{'steps/epoch':>13}"]
    names = {"padding": "plain padding (shuffled)", "group_by_length": "group_by_length",
             "packing": f"packing (rows of {data.cutoff_len})"}
    for key, figure in figures.items():
        steps = steps_per_epoch(figure["batches"], accumulation)
        mark = "   <- this config" if key == configured else ""
        lines.append(f"{names[key]:<30}{figure['batches']:>9,}{figure['padding']:>9.1%}{steps:>13,}{mark}")
    if data.max_tokens_per_batch:
        lines.append(f"(max_tokens_per_batch {data.max_tokens_per_batch} is set: batches hold a token budget instead)")
    return "\n".join(lines)


def plot_lengths(stats: list[DataStats], cutoff_len: int, path) -> None:
    """Histogram of sample lengths before truncation, one series per dataset, the cutoff as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [s for s in stats[:-1] if s.total_lengths]
    longest = max((max(s.total_lengths) for s in series), default=cutoff_len)
    bins = min(60, max(10, longest // 8))
    ax.hist([s.total_lengths for s in series], bins=bins, stacked=True, label=[s.name for s in series])
    ax.axvline(cutoff_len, color="red", linestyle="--", label=f"cutoff_len {cutoff_len}")
    ax.set_xlabel("tokens per sample (prompt + response, before truncation)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
