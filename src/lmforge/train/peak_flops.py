"""Peak FLOP/s of one device, the denominator of MFU: a flag, a datasheet table, or a short calibration.

    peak, source = peak_flops(torch.device("cuda"), torch.bfloat16)   # datasheet table, else calibration

On CPUs (and GPUs missing from the table) the "peak" is the FLOP/s a square matmul achieves in the
training dtype, measured for ~0.5 s at train start: achievable speed, so MFU against it reads higher than
against a datasheet.
"""

from __future__ import annotations

import time

import torch

from lmforge.arith.peak_tflops import lookup_peak_flops

_DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def dtype_key(dtype: torch.dtype, device_type: str = "cuda") -> str:
    """`bf16`, `fp16`, `tf32` or `fp32`: the PEAK_TFLOPS column that matmuls in `dtype` run at now."""
    key = _DTYPE_KEYS.get(dtype, "fp32")
    if key == "fp32" and device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        key = "tf32"  # `tf32: true` (or torch's allow_tf32) runs fp32 matmuls on tensor cores
    return key


def _synchronize(device: torch.device) -> None:
    backend = getattr(torch, device.type, None)
    if device.type != "cpu" and backend is not None and hasattr(backend, "synchronize"):
        backend.synchronize()


def calibrate_peak_flops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    seconds: float = 0.5,
) -> float:
    """Achieved FLOP/s of a square matmul loop on `device`: the peak to use where no datasheet entry exists.

    Time-boxed: a warm-up matmul (which also shrinks the matrices while one takes more than a quarter of
    `seconds`, e.g. bf16 on a CPU without bf16 units), then matmuls until `seconds` have passed. On a CPU
    the whole call takes about 1.5 x `seconds`. This is the *achievable* dense matmul rate, typically
    60-90% of a datasheet figure, so MFU against it reads higher than against the datasheet.

    Args:
        device: Where to measure (the training device).
        dtype: The dtype the training matmuls run in.
        size: Matrix side; default 1024 on CPU, 8192 on accelerators (big enough to reach the tensor-core
            rate).
        seconds: Length of the timed loop.
    """
    device = torch.device(device)
    n = size or (1024 if device.type == "cpu" else 8192)
    generator = torch.Generator(device="cpu").manual_seed(0)
    while True:
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        _synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)  # warm-up: library init, kernel selection, caches
        _synchronize(device)
        if size is not None or n <= 128 or time.perf_counter() - start <= seconds / 4:
            break
        n //= 2
    iterations, batch = 0, 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            torch.matmul(a, b, out=out)
        # Sync per batch, not per matmul: the accelerator queue stays full while the host waits.
        _synchronize(device)
        iterations += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        batch = iterations  # double the work between syncs
    return 2.0 * n**3 * iterations / elapsed


def peak_flops(
    device: torch.device,
    dtype: torch.dtype,
    *,
    peak_tflops: float | None = None,
    calibrate: bool = True,
    seconds: float = 0.5,
) -> tuple[float | None, str]:
    """Peak FLOP/s of one device and where it came from: the flag, the datasheet table, or a calibration.

    Returns:
        (FLOP/s or None when unknown, a short description of the source for the log).
    """
    if peak_tflops is not None:
        return peak_tflops * 1e12, "peak_tflops"
    name = device.type
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        found = lookup_peak_flops(name, dtype_key(dtype))
        if found is not None:
            return found[0], f"datasheet {found[1]} {dtype_key(dtype)} ({name})"
    column = dtype_key(dtype, device.type)
    if not calibrate:
        return None, f"unknown for {name} {column} (set peak_tflops, or mfu_calibration: true)"
    key = (str(device), dtype, seconds)
    if key not in _CALIBRATED:  # a machine property: a process that trains again (a sweep, tests) measures once
        _CALIBRATED[key] = calibrate_peak_flops(device, dtype, seconds=seconds)
    return _CALIBRATED[key], f"calibrated: square {column} matmul on {name}, {seconds:g} s"


_CALIBRATED: dict[tuple, float] = {}
