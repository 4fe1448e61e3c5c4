"""lm-evaluation-harness group files and their aggregate scores: `GroupSpec`, `aggregate_group`.

    # mmlu_local.yaml
    group: mmlu_local
    task: [mmlu_local_anatomy, mmlu_local_biology]     # task names, tags or other groups
    aggregate_metric_list:
      - metric: acc
        weight_by_size: true

A group's metric is the mean of its tasks' values, weighted by their sizes (or not, weight_by_size: false),
with lm-eval's pooled standard error sqrt(sum((n_i - 1) n_i se_i^2) / (N - k) / N). A group without
aggregate_metric_list only collects its tasks (lm-eval reports no number for it); a `tag` on task files does
the same without a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, did_you_mean

GROUP_KEYS = ("group", "group_alias", "task", "aggregate_metric_list", "metadata")


@dataclass(frozen=True)
class Aggregate:
    metric: str
    weight_by_size: bool = True
    filter_list: tuple[str, ...] | None = None  # None: every filter the tasks report the metric under


@dataclass(frozen=True)
class GroupSpec:
    path: Path
    group: str
    members: tuple[str, ...]
    aggregates: tuple[Aggregate, ...] = ()
    alias: str | None = None


def parse_group(raw: dict[str, Any], path: Path) -> GroupSpec:
    where = str(path)
    for key in raw:
        if key not in GROUP_KEYS:
            raise ConfigError(f"{where}: unknown group key '{key}'{did_you_mean(str(key), GROUP_KEYS)}")
    members = raw.get("task")
    if isinstance(members, str):
        members = [members]
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ConfigError(f"{where}: a group's 'task' is a list of task names, tags or groups (inline task "
                          "definitions are not supported: give each task a file)")
    aggregates = []
    for entry in raw.get("aggregate_metric_list") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            raise ConfigError(f"{where}: aggregate_metric_list entry {entry!r} needs a 'metric'")
        bad = [k for k in entry if k not in ("metric", "aggregation", "weight_by_size", "filter_list")]
        if bad:
            raise ConfigError(f"{where}: aggregate_metric_list: unknown key '{bad[0]}'")
        if entry.get("aggregation", "mean") != "mean":
            raise ConfigError(f"{where}: aggregate_metric_list: aggregation '{entry['aggregation']}' is not supported "
                              "(mean, as lm-eval's built-in groups use)")
        filters = entry.get("filter_list")
        aggregates.append(Aggregate(entry["metric"], bool(entry.get("weight_by_size", True)),
                                    tuple([filters] if isinstance(filters, str) else filters) if filters else None))
    return GroupSpec(path, str(raw["group"]), tuple(members), tuple(aggregates), raw.get("group_alias"))


def aggregate_group(group: GroupSpec, tasks: list[str], results: dict[str, dict]) -> dict[str, Any]:
    """The group's row of results.json from its leaf tasks' rows."""
    row: dict[str, Any] = {"alias": group.alias or group.group, "samples": sum(results[t]["samples"] for t in tasks)}
    for agg in group.aggregates:
        suffixes = agg.filter_list or sorted({k.split(",", 1)[1] for t in tasks for k in results[t]
                                             if k.startswith(f"{agg.metric},")})
        if not suffixes:
            raise ConfigError(f"{group.path}: aggregate_metric_list: no task of group '{group.group}' reports "
                              f"'{agg.metric}'")
        for suffix in suffixes:
            key, stderr_key = f"{agg.metric},{suffix}", f"{agg.metric}_stderr,{suffix}"
            having = [t for t in tasks if key in results[t]]
            values = [results[t][key] for t in having]
            sizes = [results[t]["samples"] for t in having]
            weights = sizes if agg.weight_by_size else [1] * len(sizes)
            row[key] = sum(v * w for v, w in zip(values, weights)) / sum(weights)
            stderrs = [results[t].get(stderr_key) for t in having]
            row[stderr_key] = (_pooled_stderr(stderrs, sizes)
                               if all(isinstance(s, float) for s in stderrs) and sum(sizes) > len(sizes) else "N/A")
    return row


def _pooled_stderr(stderrs: list[float], sizes: list[int]) -> float:
    variance = sum((n - 1) * se**2 * n for se, n in zip(stderrs, sizes)) / (sum(sizes) - len(sizes))
    return math.sqrt(variance / sum(sizes))
