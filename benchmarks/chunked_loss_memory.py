"""Peak memory and time of the LM loss forward + backward: full logits vs chunked cross-entropy.

    python benchmarks/chunked_loss_memory.py                       # B=4 T=1024 H=512 V=32000, fp32 + bf16
    python benchmarks/chunked_loss_memory.py --vocab 32000 152064  # add a Qwen-sized vocabulary
    python benchmarks/chunked_loss_memory.py --device cuda         # also on a GPU

Variants, each given the final hidden states [B*T, H] and the lm_head weight [V, H]:
  naive    - `logits = hidden @ W.T` in the model dtype, then `F.cross_entropy(logits.float(), labels)`:
             what transformers' causal-LM forward + `ForCausalLMLoss` do.
  chunked  - `lmforge.train.losses.token_cross_entropy(..., chunk_size=1024)`, every label supervised.
  chunked, half ignored - the same with the first half of each row's labels IGNORE_INDEX (an SFT prompt),
             to show what skipping unsupervised positions saves on top.

How memory is measured (each variant in a fresh subprocess, so no allocator cache is shared):
  cpu  - PyTorch's CPU allocations are plain malloc/free and invisible to `tracemalloc`; the CPU allocator
         has no peak counter. We read the process's peak resident set (`getrusage(RUSAGE_SELF).ru_maxrss`)
         after building the inputs and running a tiny warm-up of both paths (so libraries and thread pools
         are loaded), run the loss forward + backward once, and report peak RSS minus that baseline. That is
         what the OS had to provide. Buffers of this size (> 32 MiB) are mmap-ed by glibc and returned on
         free, so the peak is not hidden by an earlier one; the figure includes the gradients of hidden and
         weight that both variants must produce, and allocator slack.
  cuda - `torch.cuda.max_memory_allocated()` minus the memory allocated before the loss (inputs), after
         `reset_peak_memory_stats`: exact tensor bytes, without the caching allocator's reserve.
Time is the median of `--repeats` further runs of the same forward + backward (CUDA: synchronised).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lmforge.train.losses import token_cross_entropy
from lmforge.types import IGNORE_INDEX

VARIANTS = ("naive", "chunked", "chunked, half ignored")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def naive_loss(hidden, weight, labels):
    logits = hidden @ weight.T
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_loss(hidden, weight, labels, chunk_size):
    return token_cross_entropy(hidden, weight, labels, chunk_size=chunk_size)


def make_inputs(batch, seq, hid, vocab, dtype, device, half_ignored):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(batch * seq, hid, generator=gen).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, hid, generator=gen) / hid**0.5).to(device, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    if half_ignored:
        labels[:, : seq // 2] = IGNORE_INDEX
    return hidden, weight, labels.reshape(-1).to(device)


def step(loss_fn, hidden, weight, labels):
    hidden.grad = weight.grad = None
    loss_fn(hidden, weight, labels).backward()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def max_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def worker(args) -> dict:
    dtype, device = DTYPES[args.dtype], args.device
    if args.variant == "naive":
        loss_fn = naive_loss
    else:
        loss_fn = lambda h, w, y: chunked_loss(h, w, y, args.chunk_size)
    # Warm up both code paths on tiny inputs: loads kernels and thread pools without a large transient.
    for fn in (naive_loss, lambda h, w, y: chunked_loss(h, w, y, 8)):
        step(fn, *make_inputs(1, 16, args.hidden, 64, dtype, device, False))
    inputs = make_inputs(args.batch, args.seq, args.hidden, args.vocab, dtype, device,
                         args.variant == "chunked, half ignored")
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = max_rss_bytes()
    step(loss_fn, *inputs)
    sync(device)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else max_rss_bytes()) - base
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        step(loss_fn, *inputs)
        sync(device)
        times.append(time.perf_counter() - start)
    return {"peak_mib": peak / 2**20, "time_ms": statistics.median(times) * 1e3}


def machine(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
            else platform.processor()
        name += f", {torch.get_num_threads()} threads"
    return f"{name}; torch {torch.__version__}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000])
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a variant name: run it and print JSON
    parser.add_argument("--worker-dtype", dest="worker_dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.variant, args.dtype, args.vocab = args.worker, args.worker_dtype, args.vocab[0]
        print(json.dumps(worker(args)))
        return

    print(f"# B={args.batch} T={args.seq} H={args.hidden} chunk={args.chunk_size} device={args.device}")
    print(f"# {machine(args.device)}")
    rows = []
    for vocab in args.vocab:
        for dtype in args.dtype:
            for variant in VARIANTS:
                cmd = [sys.executable, __file__, "--worker", variant, "--worker-dtype", dtype,
                       "--vocab", str(vocab), "--batch", str(args.batch), "--seq", str(args.seq),
                       "--hidden", str(args.hidden), "--device", args.device,
                       "--chunk-size", str(args.chunk_size), "--repeats", str(args.repeats)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                rows.append((vocab, variant, dtype, result["peak_mib"], result["time_ms"]))
                print(f"  V={vocab} {variant:<22} {dtype}  {result['peak_mib']:9.1f} MiB  "
                      f"{result['time_ms']:8.1f} ms", flush=True)
    print()
    print("| V | variant | dtype | peak MiB | vs naive | time ms |")
    print("|---:|---|---|---:|---:|---:|")
    naive = {(v, d): p for v, var, d, p, _ in rows if var == "naive"}
    for vocab, variant, dtype, peak, ms in rows:
        print(f"| {vocab} | {variant} | {dtype} | {peak:.0f} | {peak / naive[vocab, dtype]:.2f}x | {ms:.0f} |")


if __name__ == "__main__":
    main()
