"""Task names -> task files, as lm-eval's `--tasks` with `--include_path` finds them.

    resolve_tasks("mc_local,tasks/ppl.yaml", include_path="tasks/")   # [TaskSpec, TaskSpec]

A name is a task file's `task:` value under include_path (searched recursively, *.yaml and *.yml); a value
that is a YAML file is read as is. Only local files: lm-eval's bundled tasks download their data.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lmforge.errors import ConfigError, did_you_mean
from lmforge.eval.tasks.spec import TaskSpec, read_task_yaml


def find_tasks(include_path: str | Path) -> dict[str, Path]:
    """{task name: file} for every task YAML under `include_path`; two files naming one task is an error."""
    root = Path(include_path)
    if not root.is_dir():
        raise ConfigError(f"include_path: {root} is not a directory of task YAMLs")
    found: dict[str, Path] = {}
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        try:
            # BaseLoader: only the task name is needed here, and tags such as !function must not stop the scan
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # noqa: S506
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            continue  # not a task file; a task named in `tasks` that lives here is reported as not found
        name = raw.get("task") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in found:
                raise ConfigError(f"include_path: task '{name}' is defined twice: {found[name]} and {path}")
            found[name] = path
    return found


def resolve_tasks(tasks: str | None, include_path: str | None) -> list[TaskSpec]:
    """The checked specs of the comma-separated `tasks`, in the order given."""
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    if not names:
        raise ConfigError("set 'tasks' (task names found in include_path, or task YAML files)")
    known = find_tasks(include_path) if include_path else {}
    specs = []
    for name in names:
        if name in known:
            specs.append(read_task_yaml(known[name]))
        elif name.endswith((".yaml", ".yml")) or Path(name).is_file():
            specs.append(read_task_yaml(name))
        else:
            where = f"in include_path {include_path}" if include_path else "(set include_path to a directory of task YAMLs)"
            listing = f"; tasks there: {', '.join(sorted(known))}" if known else ""
            raise ConfigError(f"tasks: no task '{name}' {where}{did_you_mean(name, known)}{listing}")
    seen = [s.task for s in specs]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"tasks: a task is named twice ({', '.join(seen)})")
    return specs
