"""The built-in probes, one module each; importing this package registers every module in it with PROBES.

A user adds a probe by dropping a module here that calls `PROBES.add(name, Probe(...))` (see check/probe.py).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
