"""Datasheet peak TFLOP/s per device and precision: the denominator of MFU on listed GPUs (plain data).

    lookup_peak_flops("NVIDIA H100 80GB HBM3", "bf16")    # (989.5e12, "H100")
"""

from __future__ import annotations

import re

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Dense (no 2:4 sparsity) tensor-core TFLOP/s per device from the vendors' datasheets, keyed by a
    # substring of torch.cuda.get_device_name(). Matched case-insensitively as a whole word, longest key
    # first, so "H100 PCIe" wins over "H100" and "A10" does not match "A10G" or "A100".
    "B200": {"bf16": 2250.0, "fp16": 2250.0},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},
    "GH200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},  # SXM
    "H800 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H800": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A800": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L40S": {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6},
    "L40": {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},  # fp32 accumulate
    "RTX 3090": {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6},  # fp32 accumulate
    "V100": {"fp16": 125.0, "fp32": 15.7},  # SXM2; no bf16 tensor cores
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "MI300X": {"bf16": 1307.4, "fp16": 1307.4, "tf32": 653.7, "fp32": 163.4},
    "MI325X": {"bf16": 1307.4, "fp16": 1307.4, "tf32": 653.7, "fp32": 163.4},
}


def lookup_peak_flops(device_name: str, column: str) -> tuple[float, str] | None:
    """Datasheet peak FLOP/s of a device for a PEAK_TFLOPS column (bf16, fp16, tf32, fp32) and the table key
    that matched, or None."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if re.search(rf"(?<![a-z0-9]){re.escape(key.lower())}(?![a-z0-9])", device_name.lower()):
            tflops = PEAK_TFLOPS[key].get(column)
            return (tflops * 1e12, key) if tflops else None
    return None
