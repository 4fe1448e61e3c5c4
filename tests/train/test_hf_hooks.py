"""The transformers fence (lmforge/train/hf_hooks.py) checked against the installed transformers.

Each failure names the hook, the lmforge classes involved and, for a signature, both versions of it: the
message says what to read and what to update when a transformers release changes something lmforge uses.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest
import transformers
import transformers.trainer
from transformers import Trainer

import lmforge
import lmforge.train
from lmforge.train.hf_hooks import CALLS_MIRRORED, CALLS_REQUIRED, OVERRIDES, PRIVATE_USES

TRANSFORMERS = f"transformers {transformers.__version__}"
# Trainer attributes lmforge may set: documented ways to hand the Trainer its parts.
# loss_is_scaled_for_ga: a class attribute the Trainer docstring tells subclasses with their own loss to set
DOCUMENTED_ATTRIBUTES = {"lr_scheduler", "optimizer", "train_dataset", "eval_dataset", "loss_is_scaled_for_ga"}


def plain_signature(func) -> str:
    """`inspect.signature` without annotations: names, kinds and defaults are the calling contract."""
    sig = inspect.signature(func)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def lmforge_trainer_classes() -> list[type]:
    """Every lmforge class in the MRO of an lmforge Trainer subclass (mixins included)."""
    for info in pkgutil.walk_packages(lmforge.train.__path__, "lmforge.train."):
        importlib.import_module(info.name)
    found, todo = [], list(Trainer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("lmforge."):
            found.extend(k for k in cls.__mro__ if k.__module__.startswith("lmforge.") and k not in found)
    assert found, "no lmforge Trainer subclass found"
    return found


CLASSES = lmforge_trainer_classes()


def discovered_overrides() -> dict[str, set[str]]:
    """{Trainer method name: {"module:Class" defining it in lmforge}}, dunders (__init__) aside."""
    out: dict[str, set[str]] = {}
    for cls in CLASSES:
        for name, value in vars(cls).items():
            if name.startswith("__") or not callable(getattr(Trainer, name, None)):
                continue
            out.setdefault(name, set()).add(f"{cls.__module__}:{cls.__qualname__}")
    return out


def test_every_override_is_listed_with_its_classes():
    found = discovered_overrides()
    missing = sorted(set(found) - set(OVERRIDES))
    assert not missing, (
        f"lmforge overrides transformers.Trainer methods that hf_hooks.OVERRIDES does not list: "
        + "; ".join(f"{name} (in {', '.join(sorted(found[name]))})" for name in missing)
        + ". Prefer a callback or a documented hook; otherwise add them with the signature written against"
    )
    stale = sorted(set(OVERRIDES) - set(found))
    assert not stale, f"hf_hooks.OVERRIDES lists hooks no lmforge class overrides any more: {', '.join(stale)}"
    wrong = {n: (sorted(OVERRIDES[n].where), sorted(found[n])) for n in found if set(OVERRIDES[n].where) != found[n]}
    assert not wrong, "hf_hooks.OVERRIDES names the wrong classes: " + "; ".join(
        f"{n}: listed {listed}, defined in {actual}" for n, (listed, actual) in wrong.items()
    )


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_hook_signature_matches_installed_transformers(name):
    hook = OVERRIDES[name]
    where = ", ".join(hook.where)
    method = getattr(Trainer, name, None)
    assert method is not None, (
        f"{TRANSFORMERS}: Trainer.{name} no longer exists, so the override in {where} is never called "
        f"({hook.why}). Find where transformers moved it and adapt, then update hf_hooks.OVERRIDES"
    )
    installed = plain_signature(method)
    assert installed == hook.signature, (
        f"{TRANSFORMERS} changed the {hook.kind} hook Trainer.{name}, overridden in {where}:\n"
        f"  lmforge was written against: {name}{hook.signature}\n"
        f"  installed transformers has:  {name}{installed}\n"
        f"Read transformers' new Trainer.{name} and its callers, adapt the override, then update "
        f"hf_hooks.OVERRIDES['{name}']"
    )


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_overrides_accept_what_transformers_passes(name):
    expected = inspect.signature(getattr(Trainer, name)).parameters
    for cls in CLASSES:
        if name not in vars(cls):
            continue
        params = inspect.signature(vars(cls)[name]).parameters
        kinds = {p.kind for p in params.values()}
        lost = [
            p for p in list(expected)[1:]
            if p not in params and inspect.Parameter.VAR_KEYWORD not in kinds
            and not (inspect.Parameter.VAR_POSITIONAL in kinds and expected[p].kind != expected[p].KEYWORD_ONLY)
        ]
        assert not lost, f"{cls.__module__}:{cls.__qualname__}.{name} does not accept {lost} that Trainer.{name} takes"


@pytest.mark.parametrize("name", sorted(PRIVATE_USES))
def test_private_members_used_still_exist(name):
    use = PRIVATE_USES[name]
    if use.kind == "method":
        method = getattr(Trainer, name, None)
        assert method is not None, f"{TRANSFORMERS}: Trainer.{name}, used by {use.where}, no longer exists"
        installed = plain_signature(method)
        assert installed == use.signature, (
            f"{TRANSFORMERS} changed Trainer.{name}, called by {use.where}:\n"
            f"  lmforge was written against: {name}{use.signature}\n  installed transformers has:  {name}{installed}"
        )
    else:
        source = inspect.getsource(transformers.trainer)
        assert re.search(rf"self\.{name}\s*=", source), (
            f"{TRANSFORMERS}: Trainer no longer sets self.{name}, which {use.where} uses ({use.why})"
        )


def own_attribute_uses() -> tuple[set[str], set[str]]:
    """(attributes of self read or written in lmforge's Trainer classes, those written)."""
    used, written = set(), set()
    for cls in CLASSES:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                used.add(node.attr)
                if isinstance(node.ctx, ast.Store):
                    written.add(node.attr)
    return used, written


def test_every_trainer_member_lmforge_touches_is_listed():
    trainer_source = inspect.getsource(transformers.trainer)
    defined_by_lmforge = {name for cls in CLASSES for name in vars(cls)}

    def trainer_owned(name: str) -> bool:
        return hasattr(Trainer, name) or re.search(rf"self\.{name}\s*=", trainer_source) is not None

    used, written = own_attribute_uses()
    private = {n for n in used if n.startswith("_") and not n.startswith("__") and trainer_owned(n)}
    unlisted = sorted(private - defined_by_lmforge - set(OVERRIDES) - set(PRIVATE_USES))
    assert not unlisted, f"lmforge's trainers use private Trainer members hf_hooks.PRIVATE_USES does not list: {unlisted}"
    writes = {n for n in written if trainer_owned(n) and n not in defined_by_lmforge}
    unlisted = sorted(writes - DOCUMENTED_ATTRIBUTES - set(PRIVATE_USES))
    assert not unlisted, f"lmforge's trainers set Trainer attributes hf_hooks.PRIVATE_USES does not list: {unlisted}"


def calls_in(func) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    return {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }


@pytest.mark.parametrize("name", sorted(CALLS_REQUIRED))
def test_transformers_bodies_still_make_the_calls_lmforge_relies_on(name):
    missing = sorted(CALLS_REQUIRED[name] - calls_in(getattr(Trainer, name)))
    assert not missing, (
        f"{TRANSFORMERS}: Trainer.{name} no longer calls {missing}; lmforge relies on it "
        f"({OVERRIDES[name].why}). Read the new body and adapt hf_hooks.CALLS_REQUIRED and the override"
    )


@pytest.mark.parametrize("name", sorted(CALLS_MIRRORED))
def test_mirrored_bodies_have_not_changed(name):
    installed = calls_in(getattr(Trainer, name))
    assert installed == CALLS_MIRRORED[name], (
        f"{TRANSFORMERS}: Trainer.{name} now calls {sorted(installed)}, lmforge mirrors "
        f"{sorted(CALLS_MIRRORED[name])} (new: {sorted(installed - CALLS_MIRRORED[name])}, gone: "
        f"{sorted(CALLS_MIRRORED[name] - installed)}). Bring the mirror in line (OptimizationMixin._clip_grad_norm_to)"
    )


def test_no_trainer_method_is_replaced_on_an_instance():
    """DESIGN.md §11: no silent monkey patching. `obj.<Trainer method> = ...` anywhere in lmforge is one."""
    methods = {n for n in dir(Trainer) if not n.startswith("__") and callable(getattr(Trainer, n, None))}
    found = []
    for path in sorted(Path(lmforge.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
            names = [t.attr for t in targets if isinstance(t, ast.Attribute)]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and len(node.args) > 1:
                name = node.args[1]
                names += [name.value] if isinstance(name, ast.Constant) else []
            found += [f"{path.name}:{node.lineno} assigns {n}" for n in names if n in methods]
    assert not found, (
        "transformers.Trainer methods replaced by assignment (override them in the subclass and list them in "
        f"hf_hooks.OVERRIDES, or move a real patch to a named, version-guarded module): {found}"
    )
