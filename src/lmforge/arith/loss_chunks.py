"""How many tokens a chunk of the chunked loss holds (train/losses.py), by device: arithmetic only."""

from __future__ import annotations


def default_chunk_size(vocab_size: int, device_type: str) -> int:
    """Tokens per loss chunk: 1024 on accelerators; on CPU as many as keep a chunk's fp32 logits <= 32 MiB.

    Why smaller on CPU: a buffer above 32 MiB (glibc's largest mmap threshold) is a fresh mapping each time,
    which the kernel faults in and zeroes page by page, and on CPU that costs more than the matmul that
    fills it. Measured on 2 cores, bf16, forward + backward of 3072 supervised tokens: V = 32k, H = 512 took
    0.69 s at chunk 256 against 0.78 s at 1024 (0.99 s at 32: too small a matmul); V = 152k, H = 1536
    10.3 s at 256 and 10.2 s at 1024, so the floor of 256 costs nothing there.
    """
    if device_type != "cpu":
        return 1024
    return max(256, min(1024, _CPU_CHUNK_BYTES // (4 * vocab_size)))


_CPU_CHUNK_BYTES = 32 * 1024 * 1024
