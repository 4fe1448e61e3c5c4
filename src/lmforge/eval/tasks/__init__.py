"""Evaluation tasks from local files: lm-evaluation-harness task and group YAMLs (`read_task_yaml`,
`resolve_selection`) turned into scoring items (`build_items`)."""

from lmforge.eval.tasks.groups import GroupSpec
from lmforge.eval.tasks.registry import find_tasks, resolve_selection, resolve_tasks
from lmforge.eval.tasks.spec import TaskSpec, read_task_yaml
from lmforge.eval.tasks.task import Item, build_items, load_split

__all__ = ["GroupSpec", "Item", "TaskSpec", "build_items", "find_tasks", "load_split", "read_task_yaml",
           "resolve_selection", "resolve_tasks"]
