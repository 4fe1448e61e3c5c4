"""Measuring a benchmark process from outside: process-tree RSS, other load on the machine, the machine itself."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, steal) clock ticks of all cores so far, from /proc/stat (None where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def machine() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        isa = sorted({f for f in flags.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")})
    except (OSError, StopIteration):
        isa = []
    return {"cpu": cpu, "isa": isa, "logical_cpus": os.cpu_count(), "torch_threads": _torch_threads(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
            "python": platform.python_version()}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
