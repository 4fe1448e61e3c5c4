"""Runs started from the web UI (and found on disk): `lmforge train` subprocesses, their logs and their state.

    runs = Runs(root=Path("saves"))
    run = runs.start(values)            # writes <output_dir>/webui_config.yaml, starts `lmforge train` on it
    runs.state(run.id)                  # {"status": "running", "log": [...trainer_log.jsonl rows], "error": None}
    runs.stop(run.id)                   # SIGTERM: the step ends, a checkpoint is saved (GracefulStopCallback)

A run is its output directory. Started here, its process is watched; found on disk (a page reload, a second
browser, a restarted UI) it is read from its files: `trainer_log.jsonl` for progress and curves,
`webui_train.log` for the console, `lmforge_run.json` for "finished". A process that exits non-zero is "failed",
with the CLI's one-line error (it prints `error: ...` and exits 2, or a traceback's last line) as its message.
Other commands (eval, check, export, predict) run the same way as jobs whose output is kept in memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_FILE = "webui_config.yaml"
CONSOLE_FILE = "webui_train.log"


@dataclass
class Job:
    """One subprocess: `lmforge train` for a run, or `lmforge eval / check / export` for a tab."""

    id: str
    command: list[str]
    """lmforge's arguments, the subcommand first (train, eval, check, export)."""
    output: Path
    """Where its results go: the run's output_dir, or the tab's result directory."""
    console: Path
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)
    stop_requested: bool = False

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()


class Runs:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- training runs -------------------------------------------------------------------------------

    def start(self, values: dict) -> Job:
        output_dir = self.output_dir(values)
        with self._lock:
            key = str(output_dir)
            if key in self._jobs and self._jobs[key].returncode is None:
                raise RuntimeError(f"a run is already training in {output_dir}")
            output_dir.mkdir(parents=True, exist_ok=True)
            config = output_dir / CONFIG_FILE
            config.write_text(yaml.safe_dump({**values, "output_dir": str(output_dir)}, sort_keys=False,
                                             allow_unicode=True), encoding="utf-8")
            job = self._spawn(key, ["train", str(config)], output_dir, output_dir / CONSOLE_FILE)
            self._jobs[key] = job
            return job

    def output_dir(self, values: dict) -> Path:
        path = Path(str(values.get("output_dir") or "run"))
        return path if path.is_absolute() else self.root / path

    def stop(self, run_id: str) -> bool:
        job = self._jobs.get(run_id)
        if job is None or job.returncode is not None:
            return False
        job.stop_requested = True
        job.process.send_signal(signal.SIGTERM)
        return True

    def list(self) -> list[dict]:
        """Every run: those started here, and output directories under the root holding a trainer log."""
        found: set[str] = set()
        if self.root.exists():
            for name in ("trainer_log.jsonl", CONFIG_FILE):
                found |= {str(p.parent) for p in self.root.glob(f"**/{name}")}
        ids = sorted(found | set(k for k, j in self._jobs.items() if j.command[0] == "train"))
        return [self.summary(run_id) for run_id in ids]

    def summary(self, run_id: str) -> dict:
        state = self.state(run_id, with_log=False)
        return {key: state[key] for key in ("id", "name", "status", "error", "step", "total_steps")}

    def state(self, run_id: str, with_log: bool = True) -> dict:
        path = Path(run_id)
        rows = _read_log(path / "trainer_log.jsonl")
        job = self._jobs.get(run_id)
        status, error = _status(path, job, rows)
        last = next((r for r in reversed(rows) if "step" in r), {})
        state = {"id": run_id, "name": _name(path, self.root), "status": status, "error": error,
                 "step": last.get("step", 0), "total_steps": last.get("total_steps")}
        if job is not None and job.returncode is None:
            state["rss_mib"] = _rss_mib(job.process.pid)
        if with_log:
            state["log"] = rows
            state["console"] = _tail(path / CONSOLE_FILE, 4000)
        return state

    # -- other commands ------------------------------------------------------------------------------

    def run_command(self, name: str, args: list[str], output: Path) -> Job:
        """`lmforge <args>` for a tab (eval, check, export), its console in <output>/webui_<name>.log."""
        output.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        job = self._spawn(f"{name}:{output}", args, output, output / f"webui_{name}.log")
        with self._lock:
            self._jobs[job.id] = job
        return job

    def job(self, job_id: str) -> dict:
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        code = job.returncode
        console = _tail(job.console, 8000)
        status = "running" if code is None else "finished" if code == 0 else "failed"
        return {"id": job_id, "kind": job.command[0], "output": str(job.output), "status": status,
                "console": console, "error": _error_line(console) if status == "failed" else None}

    def _spawn(self, job_id: str, args: list[str], output: Path, console: Path) -> Job:
        """`lmforge <args>` run in the root, so relative paths (dataset_dir, output_dir) mean what the form shows."""
        command = [sys.executable, "-m", "lmforge.cli", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(console, "w", encoding="utf-8") as out:
            process = subprocess.Popen(command, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)  # the UI's Ctrl-C does not reach the run
        return Job(job_id, list(args), output, console, process)

    def close(self) -> None:
        for job in self._jobs.values():
            if job.returncode is None:
                job.process.send_signal(signal.SIGTERM)


def _rss_mib(pid: int) -> float | None:
    """The process's resident memory (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return rows


def _status(path: Path, job: Job | None, rows: list[dict]) -> tuple[str, str | None]:
    code = job.returncode if job is not None else None
    if job is not None and code is None:
        return ("stopping" if job.stop_requested else "running"), None
    if job is not None:
        if code != 0 and not job.stop_requested:
            return "failed", _error_line(_tail(path / CONSOLE_FILE, 8000))
        return ("stopped" if job.stop_requested else "finished"), None
    if (path / "lmforge_run.json").exists() or (path / "all_results.json").exists():
        return "finished", None
    return ("unknown" if rows else "not started"), None


def _error_line(console: str) -> str:
    """The CLI's one-line `error: ...`, else a traceback's last line, else the console's last line."""
    lines = [line for line in console.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or line.startswith("lmforge: error") or "Error:" in line:
            return line.strip()
    return lines[-1].strip() if lines else "the process exited with an error and printed nothing"


def _tail(path: Path, chars: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", errors="replace")


def _name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
