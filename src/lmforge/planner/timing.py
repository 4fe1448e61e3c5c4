"""Training time at a given MFU, and the MFU a finished run reached.

    train_seconds(flops_per_token=6 * 65e9, tokens=1.4e12, devices=2048, peak_flops=312e12, mfu=0.47)
    run_mfu(flops_per_token=6 * 65e9, tokens=1.4e12, seconds=21 * 86400, devices=2048, peak_flops=312e12)  # 0.471

MFU (model FLOPs utilisation, PaLM appendix B) = the model FLOPs the run needed / (devices x peak FLOP/s
x wall time). With 6N FLOPs per token (Kaplan et al.) this is the usual back-of-the-envelope figure;
`lmforge estimate` also gives the figure with lmforge's attention term (arith/flops.py).
"""

from __future__ import annotations

import re

from lmforge.errors import ConfigError


def run_mfu(*, flops_per_token: float, tokens: float, seconds: float, devices: int, peak_flops: float) -> float:
    """Fraction of the devices' peak a run of `tokens` tokens in `seconds` used."""
    return flops_per_token * tokens / (devices * peak_flops * seconds)


def train_seconds(*, flops_per_token: float, tokens: float, devices: int, peak_flops: float, mfu: float) -> float:
    """Wall seconds to train `tokens` tokens at `mfu` of the devices' peak."""
    return flops_per_token * tokens / (devices * peak_flops * mfu)


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_count(text: str, key: str) -> float:
    """'1.4T', '300B', '65e9', '7b' -> a number (k, M, B/G, T, P: powers of 1000)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?\d+)?)\s*([kmbgtp]?)\s*", str(text).lower())
    if not match:
        raise ConfigError(f"{key}: '{text}' is not a number (e.g. 1.4e12, 300B, 1.4T)")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def parse_duration(text: str, key: str) -> float:
    """'21d', '504h', '90m', '3600' (seconds), '1d12h' -> seconds."""
    parts = re.findall(r"([0-9.]+)\s*(min|[smhdw]?)", str(text).lower())
    rebuilt = "".join(number + unit for number, unit in parts)
    if not parts or rebuilt != re.sub(r"\s+", "", str(text).lower()):
        raise ConfigError(f"{key}: '{text}' is not a duration (e.g. 21d, 504h, 90m, 3600s)")
    return sum(float(number) * _UNITS[unit or "s"] for number, unit in parts)


_BYTE_UNITS = {"": 2**30, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "g": 2**30, "m": 2**20}


def parse_bytes(text: str, key: str) -> float:
    """'80GiB' (2^30), '80GB' (10^9), '80' (GiB) -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise ConfigError(f"{key}: '{text}' is not a memory size (e.g. 80GiB, 24GB; a plain number is GiB)")
    return float(match.group(1)) * _BYTE_UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds as the two largest units: '21.0 days', '3 h 25 min', '42 s'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{seconds:.1f} s"
