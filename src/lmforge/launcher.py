"""Re-run `lmforge train` under torchrun when the run wants more than one process.

    NPROC_PER_NODE=8 lmforge train examples/sft_full.yaml                  # one node, 8 processes
    FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 lmforge train cfg.yaml

As LLaMA-Factory does: the processes per node come from NPROC_PER_NODE (default: the number of visible
GPUs); more than one, or FORCE_TORCHRUN=1, relaunches the same command through
`python -m torch.distributed.run` with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT passed on. Each
child sees torchrun's LOCAL_RANK / WORLD_SIZE and trains; the Trainer (accelerate) sets up DDP, or
DeepSpeed / FSDP when the config asks for them. On CPUs DDP runs over gloo.

The config is loaded and validated once in the launching process first, so a bad key fails in one line
before any worker starts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping

from lmforge.errors import ConfigError
from lmforge.logging import get_logger

logger = get_logger(__name__)

_TRUE = {"1", "true", "yes", "on", "y"}


def is_launched(env: Mapping[str, str]) -> bool:
    """Whether this process is already one of torchrun's workers (or another launcher's)."""
    return "LOCAL_RANK" in env or "TORCHELASTIC_RUN_ID" in env


def nproc_per_node(env: Mapping[str, str]) -> int:
    value = env.get("NPROC_PER_NODE")
    if value is None or value == "":
        import torch

        return max(1, torch.cuda.device_count())
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"NPROC_PER_NODE={value!r}: must be a positive number of processes per node")
    return int(value)


def wants_torchrun(env: Mapping[str, str]) -> bool:
    if is_launched(env):
        return False
    return env.get("FORCE_TORCHRUN", "").lower() in _TRUE or nproc_per_node(env) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The torchrun command line that runs `lmforge train *argv` on this node."""
    nnodes = env.get("NNODES", "1")
    node_rank = env.get("NODE_RANK", "0")
    for key, value in (("NNODES", nnodes), ("NODE_RANK", node_rank)):
        if not value.isdigit():
            raise ConfigError(f"{key}={value!r}: must be a whole number")
    if int(node_rank) >= int(nnodes):
        raise ConfigError(f"NODE_RANK={node_rank} must be below NNODES={nnodes}")
    if int(nnodes) > 1 and "MASTER_ADDR" not in env:
        raise ConfigError("NNODES > 1 needs MASTER_ADDR (the address of the node with NODE_RANK=0) and MASTER_PORT")
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", nnodes,
        "--node_rank", node_rank,
        "--nproc_per_node", str(nproc_per_node(env)),
        "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"),
        "--master_port", env.get("MASTER_PORT") or str(_free_port()),
        "-m", "lmforge.cli", "train", *argv,
    ]


def relaunch(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run `lmforge train *argv` under torchrun and return its exit code."""
    env = dict(os.environ if env is None else env)
    command = torchrun_command(argv, env)
    if "OMP_NUM_THREADS" not in env:
        import torch

        if not torch.cuda.is_available():
            # torchrun would give each worker 1 thread; on CPUs the workers share the cores instead.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc_per_node(env)))
    logger.info("launching %s process(es) per node: %s", command[command.index("--nproc_per_node") + 1],
                " ".join(command))
    return subprocess.run(command, env=env).returncode
