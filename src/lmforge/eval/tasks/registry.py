"""Task names -> task files, as lm-eval's `--tasks` with `--include_path` finds them.

    selection = resolve_selection("mc_local,my_group,tasks/ppl.yaml", include_path="tasks/")
    selection.specs, selection.groups            # the tasks to score, the groups to aggregate

A name is a task file's `task:` value, a group file's `group:` value or a task file's `tag` under include_path
(searched recursively, *.yaml and *.yml); a value that is a YAML file is read as is. Only local files:
lm-eval's bundled tasks download their data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.errors import ConfigError, did_you_mean
from lmforge.eval.tasks.groups import GroupSpec, parse_group
from lmforge.eval.tasks.spec import TaskSpec, load_yaml_mapping, parse_task


@dataclass
class Catalog:
    """What include_path holds: task and group names -> files, tag -> task names."""

    tasks: dict[str, Path] = field(default_factory=dict)
    groups: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted({*self.tasks, *self.groups, *self.tags})


@dataclass
class Selection:
    specs: list[TaskSpec] = field(default_factory=list)
    groups: list[tuple[GroupSpec, list[str]]] = field(default_factory=list)  # each group with its leaf task names


def scan(include_path: str | Path) -> Catalog:
    """The task, group and tag names under `include_path`; a name defined twice is an error."""
    root = Path(include_path)
    if not root.is_dir():
        raise ConfigError(f"include_path: {root} is not a directory of task YAMLs")
    catalog = Catalog()
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        try:
            # BaseLoader: only names are needed here, and tags such as !function must not stop the scan
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # noqa: S506
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            continue  # not a task file; a task named in `tasks` that lives here is reported as not found
        if not isinstance(raw, dict):
            continue
        is_group = isinstance(raw.get("group"), str) and isinstance(raw.get("task"), list)
        name = raw.get("group") if is_group else raw.get("task")
        if not isinstance(name, str):
            continue
        known = {**catalog.tasks, **catalog.groups}
        if name in known:
            raise ConfigError(f"include_path: '{name}' is defined twice: {known[name]} and {path}")
        (catalog.groups if is_group else catalog.tasks)[name] = path
        tags = raw.get("tag") or []
        for tag in [tags] if isinstance(tags, str) else tags:
            catalog.tags.setdefault(tag, []).append(name)
    return catalog


def find_tasks(include_path: str | Path) -> dict[str, Path]:
    """{task name: file} for every task YAML under `include_path`."""
    return scan(include_path).tasks


def resolve_selection(tasks: str | None, include_path: str | None) -> Selection:
    """The checked specs of the comma-separated `tasks` (groups and tags expanded, each task once, in order)
    and the groups to aggregate."""
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    if not names:
        raise ConfigError("set 'tasks' (task, group or tag names found in include_path, or task YAML files)")
    catalog = scan(include_path) if include_path else Catalog()
    selection, seen = Selection(), {}

    def add(name: str, chain: tuple[str, ...]) -> list[str]:
        """Add `name` (task, group, tag or file); return its leaf task names."""
        if name in chain:
            raise ConfigError(f"tasks: group '{name}' contains itself ({' -> '.join(chain + (name,))})")
        if name in catalog.tasks or (name not in catalog.groups and name not in catalog.tags and _is_file(name)):
            path = catalog.tasks.get(name) or Path(name)
            raw = load_yaml_mapping(path)
            if "task" in raw and isinstance(raw["task"], list) and "group" in raw:
                return add_group(parse_group(raw, path), chain)
            spec = parse_task(raw, path)
            if spec.task not in seen:
                seen[spec.task] = spec
                selection.specs.append(spec)
            return [spec.task]
        if name in catalog.groups:
            path = catalog.groups[name]
            return add_group(parse_group(load_yaml_mapping(path), path), chain)
        if name in catalog.tags:
            return [leaf for member in catalog.tags[name] for leaf in add(member, chain + (name,))]
        where = f"in include_path {include_path}" if include_path else "(set include_path to a directory of task YAMLs)"
        listing = f"; names there: {', '.join(catalog.names())}" if catalog.names() else ""
        raise ConfigError(f"tasks: no task, group or tag '{name}' {where}{did_you_mean(name, catalog.names())}"
                          f"{listing}")

    def add_group(group: GroupSpec, chain: tuple[str, ...]) -> list[str]:
        leaves = list(dict.fromkeys(leaf for member in group.members for leaf in add(member, chain + (group.group,))))
        if group.aggregates and all(g.group != group.group for g, _ in selection.groups):
            selection.groups.append((group, leaves))
        return leaves

    for name in names:
        add(name, ())
    return selection


def resolve_tasks(tasks: str | None, include_path: str | None) -> list[TaskSpec]:
    """The checked specs of the comma-separated `tasks`, groups and tags expanded."""
    return resolve_selection(tasks, include_path).specs


def _is_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or Path(name).is_file()
