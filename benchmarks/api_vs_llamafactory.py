"""Serving benchmark: `lmforge api` against LLaMA-Factory 0.9.5's `llamafactory-cli api`, streamed chat completions.

    .venv/bin/python benchmarks/api_vs_llamafactory.py            # 8 / 16 / 64 requests at c1 / c4 / c16, 64 tokens
    .venv/bin/python benchmarks/api_vs_llamafactory.py --quick    # smoke: 2 / 4 / 16 requests, 16 tokens

One model for both, made by lmforge: `create-model tiny-qwen2 --set hidden_size=128 --set intermediate_size=384`
(the demo architecture, fp32, random weights), template qwen. The servers run one at a time, on free ports of
127.0.0.1. Per server: each prompt once non-streamed (its greedy answer), `--warmup` streamed requests, then
at each concurrency a fixed number of streamed requests from a thread pool (a kept-alive http.client connection
per thread). Requests are identical on both sides: a system message and a user prompt, `temperature: 0`,
`max_tokens`, `stream: true`, `stream_options: {include_usage: true}`. Random weights almost never emit EOS, so
answers are `max_tokens` long. Output tokens: lmforge's usage chunk (finish_reason must be "length"); LLaMA-
Factory streams neither usage nor a real finish_reason (always "stop"), so its count is the prompt's
non-streamed greedy answer's (finish_reason "length", completion_tokens == max_tokens), and the streamed text
must equal that answer ("full length" counts the requests so verified).

tokens/s = all output tokens / wall time of the level; latency = request sent to end of stream; TTFT = request
sent to the first non-empty content delta; p50 / p99 by linear interpolation. Goals at the highest concurrency:
lmforge >= 4x LLaMA-Factory's tokens/s, >= 4x its own c1 rate, p50 TTFT < 1 s. Writes
benchmarks/results/api_vs_llamafactory.json (`--quick`: api_vs_llamafactory_quick.json).

Both servers at their defaults (lmforge: max_num_seqs 64, max_batch_tokens 32768). LLaMA-Factory's, from
llamafactory/api/ and chat/hf_engine.py: infer_backend huggingface, one `model.generate` per request;
MAX_CONCURRENT unset = 1, an asyncio.Semaphore(1) around generation, so requests run one after another and the
rest queue (inside their TTFT); generating defaults do_sample true, temperature 0.95, top_p 0.7, but a request's
`temperature: 0` turns do_sample off by itself (no LF-only `do_sample` field needed); API_VERBOSE on (logs every
request); infer_dtype auto = fp32 without a GPU; `stream_options` and `model` ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llamafactory_venv import ensure_lf_venv, lf_python, offline_env
from process_metrics import machine

from lmforge.demo import DEMO_MODEL_OVERRIDES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SYSTEM = "You are a helpful assistant."
PROMPTS = [f"Write a short paragraph about {topic}." for topic in (
    "rivers", "bridges", "owls", "glaciers", "violins", "deserts", "comets", "lighthouses", "tea", "chess",
    "volcanoes", "bees", "trains", "coral", "maps", "clocks")]
DROP_ENV = ("API_KEY", "API_MODEL_NAME", "MAX_CONCURRENT", "API_VERBOSE")  # both servers at their defaults


# -- model and servers ----------------------------------------------------------------------------------

def create_demo_model(path: Path) -> list[str]:
    """The demo architecture with random weights, by `lmforge create-model` (once); returns the command."""
    cmd = [sys.executable, "-m", "lmforge.cli", "create-model", "tiny-qwen2", str(path), "--seed", "0"]
    cmd += [arg for key, value in DEMO_MODEL_OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
    if not (path / "config.json").exists():
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=offline_env())
    return cmd


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def server_command(name: str, cfg: Path, port: int, venv: Path | None = None) -> tuple[list[str], dict]:
    """`lmforge api` or `llamafactory-cli api` on 127.0.0.1:port, and its environment (offline, no API key)."""
    env = {key: value for key, value in offline_env().items() if key not in DROP_ENV}
    if name == "lmforge":
        return [str(Path(sys.executable).parent / "lmforge"), "api", str(cfg), "--port", str(port)], env
    return [str(venv / "bin" / "llamafactory-cli"), "api", str(cfg)], {**env, "API_PORT": str(port),
                                                                        "API_HOST": "127.0.0.1"}


@contextlib.contextmanager
def serve(cmd: list[str], env: dict, port: int, log_path: Path, timeout: float = 600):
    """Start a server in its own process group, wait until /v1/models answers, stop the group afterwards.
    Yields (process, served model id, seconds to ready)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent,
                                start_new_session=True)
        try:
            start = time.perf_counter()
            model = wait_ready(proc, port, timeout, log_path)
            yield proc, model, time.perf_counter() - start
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def wait_ready(proc: subprocess.Popen, port: int, timeout: float, log_path: Path) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"server exited with {proc.returncode}:\n  " + "\n  ".join(tail))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            if resp.status == 200:
                return json.loads(resp.read())["data"][0]["id"]
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    raise TimeoutError(f"no answer on port {port} after {timeout:.0f} s (log: {log_path})")


# -- client ---------------------------------------------------------------------------------------------

class Client:
    """A kept-alive http.client connection per thread. One that sat idle past the server's keep-alive timeout
    (uvicorn's 5 s) and was closed by it is reopened once (`retries` counts those)."""

    def __init__(self, port: int, timeout: float = 600):
        self.port, self.timeout, self.local, self.retries = port, timeout, threading.local(), 0

    def send(self, method: str, path: str, body: bytes | None = None) -> http.client.HTTPResponse:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            if getattr(self.local, "conn", None) is None:
                self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.local.reused = False
            reused = self.local.reused
            try:
                self.local.conn.request(method, path, body=body, headers=headers)
                resp = self.local.conn.getresponse()
            except OSError as exc:  # RemoteDisconnected, BrokenPipeError, ConnectionResetError are OSErrors
                self.drop()
                closed_idle = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if attempt or not (reused and closed_idle):
                    raise
                self.retries += 1
                continue
            self.local.reused = True
            return resp
        raise AssertionError("unreachable")

    def drop(self) -> None:
        """Close this thread's connection (a client walking away); its next request opens a new one."""
        if getattr(self.local, "conn", None) is not None:
            self.local.conn.close()
        self.local.conn = None

    def post(self, body: dict | bytes, path: str = "/v1/chat/completions") -> tuple[int, bytes]:
        resp = self.send("POST", path, body if isinstance(body, bytes) else json.dumps(body).encode())
        return resp.status, resp.read()

    def get(self, path: str) -> tuple[int, bytes]:
        resp = self.send("GET", path)
        return resp.status, resp.read()


def iter_sse(resp: http.client.HTTPResponse):
    """The data payloads of a server-sent event stream (comments such as sse-starlette's pings skipped)."""
    while line := resp.readline():
        line = line.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            payload = line[5:]
            yield payload[1:] if payload.startswith(" ") else payload


def chat_body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict:
    body = {"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def stream_chat(client: Client, body: dict) -> dict:
    """One streamed request: status, TTFT, latency, text, finish_reason, usage (None where not sent)."""
    start = time.perf_counter()
    resp = client.send("POST", "/v1/chat/completions", json.dumps(body).encode())
    out = {"status": resp.status, "ttft": None, "text": "", "finish_reason": None, "usage": None, "done": False}
    if resp.status != 200:
        out["error"] = resp.read()[:300].decode(errors="replace")
        out["latency"] = time.perf_counter() - start
        return out
    for payload in iter_sse(resp):
        if payload == "[DONE]":
            out["done"] = True
            break
        chunk = json.loads(payload)
        out["usage"] = chunk.get("usage") or out["usage"]
        out["error"] = chunk.get("error") or out.get("error")
        for choice in chunk.get("choices") or []:
            if content := (choice.get("delta") or {}).get("content"):
                out["ttft"] = out["ttft"] if out["ttft"] is not None else time.perf_counter() - start
                out["text"] += content
            out["finish_reason"] = choice.get("finish_reason") or out["finish_reason"]
    resp.read()
    out["latency"] = time.perf_counter() - start
    return out


def percentile(values: list[float], q: float) -> float | None:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


# -- one server -----------------------------------------------------------------------------------------

def reference_answers(client: Client, model: str, prompts: list[str], max_tokens: int) -> list[dict]:
    """Each prompt's greedy answer, non-streamed: what a streamed answer without usage is checked against."""
    refs = []
    for prompt in prompts:
        status, raw = client.post(chat_body(model, prompt, max_tokens, stream=False))
        data = json.loads(raw) if status == 200 else {}
        choice, usage = (data.get("choices") or [{}])[0], data.get("usage") or {}
        refs.append({"status": status, "finish_reason": choice.get("finish_reason"),
                     "text": (choice.get("message") or {}).get("content"), **usage})
    return refs


def count_tokens(result: dict, ref: dict, max_tokens: int) -> tuple[int, bool]:
    """(output tokens, whether the answer is known to be max_tokens long)."""
    if result["status"] != 200 or not result["done"] or result.get("error"):
        return 0, False
    if result["usage"]:  # lmforge: its own count, and the finish reason says why it stopped
        tokens = result["usage"]["completion_tokens"]
        return tokens, result["finish_reason"] == "length" and tokens == max_tokens
    # LLaMA-Factory: no usage, finish_reason always "stop": the same prompt's greedy answer, non-streamed
    full = ref.get("finish_reason") == "length" and ref.get("completion_tokens") == max_tokens
    return ref.get("completion_tokens") or 0, full and result["text"] == ref.get("text")


def run_level(client: Client, model: str, prompts: list[str], refs: list[dict], max_tokens: int,
              concurrency: int, requests: int) -> dict:
    jobs = [(i % len(prompts), chat_body(model, prompts[i % len(prompts)], max_tokens, stream=True))
            for i in range(requests)]

    def one(job):
        index, body = job
        start = time.perf_counter()
        try:
            result = stream_chat(client, body)
        except Exception as exc:  # noqa: BLE001 - a transport error fails this request, not the level
            result = {"status": None, "done": False, "error": f"{type(exc).__name__}: {exc}", "ttft": None,
                      "text": "", "latency": time.perf_counter() - start}
        result["output_tokens"], result["full_length"] = count_tokens(result, refs[index], max_tokens)
        result["matches_reference"] = result["text"] == refs[index].get("text")
        return {"prompt": index, **{k: v for k, v in result.items() if k != "text"}}

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    tokens = sum(r["output_tokens"] for r in rows)
    latency, ttft = [r["latency"] for r in rows], [r["ttft"] for r in rows]
    return {"concurrency": concurrency, "requests": requests, "wall_s": wall, "output_tokens": tokens,
            "tokens_per_s": tokens / wall, "failed": sum(r["status"] != 200 or not r["done"] for r in rows),
            "full_length": sum(r["full_length"] for r in rows),
            "matches_reference": sum(r["matches_reference"] for r in rows),
            "latency_p50": percentile(latency, 50), "latency_p99": percentile(latency, 99),
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99), "rows": rows}


def bench_server(name: str, cmd: list[str], env: dict, port: int, work: Path, args) -> dict:
    print(f"[bench] {name}: {' '.join(cmd)}", flush=True)
    prompts = PROMPTS[:args.prompts]
    with serve(cmd, env, port, work / f"{name}.log") as (_proc, model, ready_s):
        client = Client(port)
        refs = reference_answers(client, model, prompts, args.max_tokens)
        for i in range(args.warmup):
            stream_chat(client, chat_body(model, prompts[i % len(prompts)], args.max_tokens, stream=True))
        out = {"command": cmd, "ready_s": ready_s, "model_id": model, "references": refs, "levels": {}}
        for concurrency, requests in zip(args.levels, args.requests, strict=True):
            level = run_level(client, model, prompts, refs, args.max_tokens, concurrency, requests)
            out["levels"][str(concurrency)] = level
            print(f"[bench] {name} c{concurrency}: {level['tokens_per_s']:.1f} tok/s, p50 TTFT "
                  f"{level['ttft_p50'] or float('nan'):.3f} s, {level['failed']} failed, "
                  f"{level['full_length']}/{requests} full length", flush=True)
        out["idle_connections_reopened"] = client.retries
    return out


# -- report ---------------------------------------------------------------------------------------------

def versions(venv: Path | None) -> dict:
    code = ("import importlib.metadata as m, json, sys\ndef v(p):\n try: return m.version(p)\n"
            " except m.PackageNotFoundError: return None\nprint(json.dumps({p: v(p) for p in sys.argv[1:]}))")
    common = ("torch", "transformers", "fastapi", "uvicorn")
    sides = {"lmforge": (Path(sys.executable), ("lmforge", *common))}
    if venv is not None:
        sides["llamafactory"] = (lf_python(venv), ("llamafactory", *common, "sse-starlette"))
    out = {side: json.loads(subprocess.run([str(py), "-c", code, *pkgs], capture_output=True, text=True,
                                           check=True).stdout) for side, (py, pkgs) in sides.items()}
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
    out["lmforge"]["commit"] = commit + (" (src/ has uncommitted changes)" if dirty.strip() else "")
    return out


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def table(servers: dict) -> str:
    lines = ["| server | conc | requests | failed | full length | wall s | out tokens | tok/s | p50 lat s "
             "| p99 lat s | p50 TTFT s | p99 TTFT s |", "|---|" + "---:|" * 11]
    for name, server in servers.items():
        for c, lv in server["levels"].items():
            lines.append(f"| {name} | {c} | {lv['requests']} | {lv['failed']} | {lv['full_length']} | "
                         f"{lv['wall_s']:.2f} | {lv['output_tokens']} | {lv['tokens_per_s']:.1f} | "
                         + " | ".join(fmt(lv[k]) for k in ("latency_p50", "latency_p99", "ttft_p50", "ttft_p99"))
                         + " |")
    return "\n".join(lines)


def goals(servers: dict, top: int, low: int) -> tuple[dict, list[str]]:
    """The ratios, and the issue's goals as PASS / FAIL / SKIP (a server or level not run) lines."""
    def level(name, c):
        return servers.get(name, {}).get("levels", {}).get(str(c)) or {}

    def ratio(a, b):
        return a["tokens_per_s"] / b["tokens_per_s"] if a and b and b["tokens_per_s"] else None

    ours, lf, base = level("lmforge", top), level("llamafactory", top), level("lmforge", low)
    ratios = {f"lmforge_c{top}_over_llamafactory_c{top}": ratio(ours, lf),
              f"lmforge_c{top}_over_lmforge_c{low}": ratio(ours, base)}
    checks = [(f"lmforge c{top} tok/s >= 4x LLaMA-Factory c{top}", ratio(ours, lf), lambda v: v >= 4, "{:.2f}x"),
              (f"lmforge c{top} tok/s >= 4x lmforge c{low}", ratio(ours, base), lambda v: v >= 4, "{:.2f}x"),
              (f"lmforge c{top} p50 TTFT < 1 s", ours.get("ttft_p50"), lambda v: v < 1, "{:.3f} s")]
    lines = [f"{'SKIP' if v is None else 'PASS' if ok(v) else 'FAIL'}: {what} "
             f"({'n/a' if v is None else shown.format(v)})" for what, v, ok, shown in checks]
    return ratios, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--requests", default="8,16,64", help="streamed requests per level (default 8,16,64)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="streamed warm-up requests per server")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"distinct prompts (<= {len(PROMPTS)})")
    parser.add_argument("--servers", default="lmforge,llamafactory")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (overrides the counts): 2,4,16 requests, 16 tokens, 1 warm-up, 4 prompts")
    parser.add_argument("--work", default=str(HERE / "runs" / "api_bench"))
    parser.add_argument("--lf-venv", default=str(HERE / ".venv-llamafactory"))
    parser.add_argument("--out", help="results JSON (default benchmarks/results/api_vs_llamafactory[_quick].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.max_tokens, args.warmup, args.prompts = "2,4,16", 16, 1, 4
    args.levels, args.requests = [int(x) for x in args.levels.split(",")], [int(x) for x in args.requests.split(",")]
    out_path = Path(args.out or HERE / "results" / f"api_vs_llamafactory{'_quick' if args.quick else ''}.json")
    work, venv = Path(args.work).resolve(), Path(args.lf_venv).resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = [s for s in args.servers.split(",") if s]
    if "llamafactory" in names:
        ensure_lf_venv(venv)
    model_dir = work / "model-demo-tiny-qwen2"
    create_cmd = create_demo_model(model_dir)
    cfg = {"model_name_or_path": str(model_dir), "template": "qwen"}
    cfgs = {"lmforge": write_yaml(work / "lmforge_api.yaml", cfg),
            "llamafactory": write_yaml(work / "llamafactory_api.yaml", {**cfg, "infer_backend": "huggingface"})}
    servers = {}
    for name in names:  # one at a time: each is stopped before the next starts
        port = free_port()
        cmd, env = server_command(name, cfgs[name], port, venv)
        servers[name] = bench_server(name, cmd, env, port, work, args)

    ratios, goal_lines = goals(servers, max(args.levels), min(args.levels))
    same = None
    if len(servers) == 2:  # same prompts, greedy: both servers should give the same answers
        a, b = ([r["text"] for r in server["references"]] for server in servers.values())
        same = f"{sum(x == y for x, y in zip(a, b))}/{len(a)} prompts"
    print("\n" + table(servers) + "\n")
    print("\n".join(f"{key}: {fmt(value, '.2f')}x" for key, value in ratios.items()))
    print(f"same greedy answers (non-streamed) on both servers: {same or 'n/a'}")
    print("\n".join(goal_lines))
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(),
              "versions": versions(venv if "llamafactory" in names else None), "model": create_cmd[3:],
              "settings": {"levels": args.levels, "requests": args.requests, "max_tokens": args.max_tokens,
                           "warmup": args.warmup, "prompts": PROMPTS[:args.prompts], "system": SYSTEM,
                           "configs": {name: path.read_text() for name, path in cfgs.items()}},
              "servers": servers, "ratios": ratios, "same_greedy_answers": same, "goals": goal_lines}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1))
    print(f"[bench] results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
