"""Load test of the real `lmforge api`: 2,000 mixed requests at concurrency 32, then is the server still sound?

    .venv/bin/python benchmarks/api_load.py            # 100 warm-up + 2,000 requests at concurrency 32
    .venv/bin/python benchmarks/api_load.py --quick    # smoke: 10 warm-up + 60 requests at concurrency 8

The server is `lmforge api` in a subprocess (its defaults: max_num_seqs 64, max_batch_tokens 32768) on the demo
architecture (`create-model tiny-qwen2 --set hidden_size=128 --set intermediate_size=384`, random weights,
template qwen). Clients: a thread pool, a kept-alive http.client connection per thread. The mix, shuffled with a
fixed seed: 40% non-streamed, 40% streamed (`stream_options.include_usage`), both `max_tokens` 8, greedy and
seeded sampling alternating; 10% streamed with max_tokens 256 and cancelled after the first chunk (the socket
closed); 10% malformed bodies (invalid JSON, not UTF-8, wrong types, missing fields, a bad role, n too large,
out-of-range values, an unknown model, a prompt + max_tokens over the context, ...).

Order: warm-up (the same mix, another seed); wait until /metrics shows the engine idle; server RSS (VmRSS of
/proc/<pid>/status); the run, /metrics scraped every 0.5 s by a background thread; idle again; RSS; one more
request. Checks, printed as PASS / FAIL: no 5xx; no transport errors; every valid request answered (200, a
finish_reason and usage; a cancelled one got its first chunk); every malformed one a 4xx whose body is exactly
OpenAI's error shape {"error": {"message", "type", "param", "code"}}; the engine idle after the run (no running
or queued sequence, empty KV cache: the cancelled answers were dropped); RSS after within 10% of before; the
server still answers. Writes benchmarks/results/api_load.json (`--quick`: api_load_quick.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from api_vs_llamafactory import (HERE, PROMPTS, Client, chat_body, create_demo_model, free_port, iter_sse,
                                 percentile, serve, server_command, stream_chat, versions, write_yaml)
from process_metrics import machine

MIX = {"plain": 0.4, "stream": 0.4, "cancel": 0.1, "malformed": 0.1}
ERROR_KEYS = {"message", "type", "param", "code"}
WATCHED = ("lmforge_running_sequences", "lmforge_queue_length", "lmforge_generation_tokens_per_second",
           "lmforge_kv_cache_tokens", "lmforge_kv_cache_usage_ratio")


def malformed_bodies(model: str) -> list[tuple[str, bytes]]:
    good = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    def with_(**changes) -> bytes:
        return json.dumps({**good, **changes}).encode()

    def without(key: str) -> bytes:
        return json.dumps({k: v for k, v in good.items() if k != key}).encode()

    return [("invalid JSON", b'{"model": "x", "messages": [}'), ("empty body", b""), ("not an object", b"[1, 2]"),
            ("not UTF-8", b'\xff\xfe{"model": 1}'), ("NaN temperature", with_(temperature=float("nan"))),
            ("missing messages", without("messages")), ("missing model", without("model")),
            ("messages a string", with_(messages="hi")), ("no messages", with_(messages=[])),
            ("bad role", with_(messages=[{"role": "wizard", "content": "hi"}])),
            ("content a number", with_(messages=[{"role": "user", "content": 42}])),
            ("n too large", with_(n=1000)), ("max_tokens a string", with_(max_tokens="8")),
            ("max_tokens 0", with_(max_tokens=0)), ("temperature 7", with_(temperature=7)),
            ("stream a string", with_(stream="yes")), ("five stop strings", with_(stop=list("abcde"))),
            ("max_tokens over the context", with_(max_tokens=10**7)), ("unknown model", with_(model="nope"))]


def is_openai_error(raw: bytes) -> bool:
    """Exactly {"error": {"message": str, "type": str, "param": str|null, "code": str|null}}."""
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    err = data.get("error") if isinstance(data, dict) else None
    return (isinstance(data, dict) and set(data) == {"error"} and isinstance(err, dict) and set(err) == ERROR_KEYS
            and isinstance(err["message"], str) and bool(err["message"]) and isinstance(err["type"], str)
            and all(err[k] is None or isinstance(err[k], str) for k in ("param", "code")))


# -- one request of each kind: (status, ok, detail) ------------------------------------------------------

def valid_body(model: str, i: int, max_tokens: int, stream: bool) -> dict:
    body = chat_body(model, PROMPTS[i % len(PROMPTS)], max_tokens, stream)
    if i % 2:  # every other one sampled, seeded
        body.update(temperature=0.8, seed=i)
    return body


def plain(client: Client, model: str, i: int, args) -> tuple[int, bool, str]:
    status, raw = client.post(valid_body(model, i, args.max_tokens, stream=False))
    data = json.loads(raw) if status == 200 else {}
    choice, usage = (data.get("choices") or [{}])[0], data.get("usage") or {}
    ok = status == 200 and choice.get("finish_reason") in ("length", "stop") and usage.get("completion_tokens", 0) > 0
    return status, ok, "" if ok else raw[:200].decode(errors="replace")


def streamed(client: Client, model: str, i: int, args) -> tuple[int, bool, str]:
    r = stream_chat(client, valid_body(model, i, args.max_tokens, stream=True))
    ok = (r["status"] == 200 and r["done"] and not r.get("error") and r["finish_reason"] in ("length", "stop")
          and bool(r["usage"]))
    return r["status"], ok, "" if ok else str(r.get("error") or r)[:200]


def cancelled(client: Client, model: str, i: int, args) -> tuple[int, bool, str]:
    """Read the first chunk of a long answer, then close the socket."""
    resp = client.send("POST", "/v1/chat/completions",
                       json.dumps(valid_body(model, i, args.cancel_max_tokens, stream=True)).encode())
    first = next(iter_sse(resp), None) if resp.status == 200 else resp.read()[:200].decode(errors="replace")
    client.drop()
    ok = resp.status == 200 and first is not None
    return resp.status, ok, "" if ok else str(first)


def malformed(client: Client, model: str, i: int, args) -> tuple[int, bool, str]:
    name, raw = args.cases[i % len(args.cases)]
    status, body = client.post(raw)
    ok = 400 <= status < 500 and is_openai_error(body)
    return status, ok, name if ok else f"{name}: {body[:200].decode(errors='replace')}"


KINDS = {"plain": plain, "stream": streamed, "cancel": cancelled, "malformed": malformed}


def mix(n: int, seed: int) -> list[str]:
    kinds = [kind for kind, share in MIX.items() if kind != "plain" for _ in range(round(n * share))]
    kinds += ["plain"] * (n - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


def run_mix(port: int, model: str, n: int, concurrency: int, seed: int, args) -> tuple[list[dict], float, int]:
    """The requests of `mix(n, seed)` from `concurrency` threads: (a row per request, wall seconds, reconnects)."""
    client = Client(port)

    def one(job):
        i, kind = job
        start = time.perf_counter()
        try:
            status, ok, detail = KINDS[kind](client, model, i, args)
        except Exception as exc:  # noqa: BLE001 - a transport error is a finding, not a crash of the test
            client.drop()
            status, ok, detail = None, False, f"{type(exc).__name__}: {exc}"
        return {"kind": kind, "status": status, "ok": ok, "latency": time.perf_counter() - start, "detail": detail}

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(one, enumerate(mix(n, seed))))
    return rows, time.perf_counter() - start, client.retries


# -- the server's state ---------------------------------------------------------------------------------

def scrape(client: Client) -> dict[str, float]:
    status, raw = client.get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    return {line.split()[0]: float(line.split()[1]) for line in raw.decode().splitlines()
            if line and not line.startswith("#")}


class Scraper(threading.Thread):
    """/metrics every `interval` seconds until stopped, on its own connection."""

    def __init__(self, port: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.client, self.interval, self.halt, self.samples = Client(port), interval, threading.Event(), []

    def run(self) -> None:
        start = time.perf_counter()
        while not self.halt.is_set():
            try:
                self.samples.append({"t": round(time.perf_counter() - start, 2), **scrape(self.client)})
            except (OSError, AssertionError) as exc:
                self.samples.append({"t": round(time.perf_counter() - start, 2), "error": str(exc)})
            self.halt.wait(self.interval)

    def maxima(self) -> dict[str, float]:
        return {key: max((s.get(key, 0.0) for s in self.samples), default=None) for key in WATCHED}


def wait_idle(client: Client, timeout: float = 120) -> tuple[bool, float, dict]:
    """Until /metrics shows nothing running, queued or cached, twice in a row: (idle, seconds, last metrics)."""
    start, calm = time.perf_counter(), 0
    while True:
        metrics = scrape(client)
        busy = sum(metrics[k] for k in ("lmforge_running_sequences", "lmforge_queue_length", "lmforge_kv_cache_tokens"))
        calm = 0 if busy else calm + 1
        if calm == 2 or time.perf_counter() - start > timeout:
            return calm == 2, time.perf_counter() - start, metrics
        time.sleep(0.5)


def vm_rss(pid: int) -> int:
    """The process's resident set in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- report ---------------------------------------------------------------------------------------------

def summarize(rows: list[dict], wall: float, retries: int) -> dict:
    out = {"requests": len(rows), "wall_s": wall, "requests_per_s": len(rows) / wall, "kinds": {},
           "idle_connections_reopened": retries}
    for kind in MIX:
        mine = [r for r in rows if r["kind"] == kind]
        statuses: dict[str, int] = {}
        for r in mine:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        lat = [r["latency"] for r in mine]
        out["kinds"][kind] = {"requests": len(mine), "ok": sum(r["ok"] for r in mine), "statuses": statuses,
                              "latency_p50": percentile(lat, 50), "latency_p99": percentile(lat, 99),
                              "failures": [r["detail"] for r in mine if not r["ok"]][:10]}
    out["malformed_cases"] = sorted({r["detail"] for r in rows if r["kind"] == "malformed" and r["ok"]})
    return out


def checks(rows: list[dict], idle: bool, rss: tuple[int, int], final_ok: bool) -> list[tuple[str, bool]]:
    valid = [r for r in rows if r["kind"] != "malformed"]
    bad = [r for r in rows if r["kind"] == "malformed"]
    return [("no 5xx responses", not any((r["status"] or 0) >= 500 for r in rows)),
            ("no transport errors", all(r["status"] is not None for r in rows)),
            (f"every valid request answered ({sum(r['ok'] for r in valid)}/{len(valid)})", all(r["ok"] for r in valid)),
            (f"every malformed request a 4xx in OpenAI's error shape ({sum(r['ok'] for r in bad)}/{len(bad)})",
             all(r["ok"] for r in bad)),
            ("engine idle before and after the run (0 running, 0 queued, empty KV cache)", idle),
            (f"RSS after within 10% of before ({rss[0] / 2**20:.1f} -> {rss[1] / 2**20:.1f} MiB, "
             f"{rss[1] / rss[0] - 1:+.1%})", abs(rss[1] / rss[0] - 1) <= 0.10),
            ("the server still answers a request", final_ok)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of the valid requests")
    parser.add_argument("--cancel-max-tokens", type=int, default=256, help="max_tokens of the cancelled ones")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 warm-up, 60 requests, concurrency 8")
    parser.add_argument("--work", default=str(HERE / "runs" / "api_load"))
    parser.add_argument("--out", help="results JSON (default benchmarks/results/api_load[_quick].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.requests, args.concurrency = 10, 60, 8
    out_path = Path(args.out or HERE / "results" / f"api_load{'_quick' if args.quick else ''}.json")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model-demo-tiny-qwen2"
    create_cmd = create_demo_model(model_dir)
    cfg = write_yaml(work / "lmforge_api.yaml", {"model_name_or_path": str(model_dir), "template": "qwen"})
    port = free_port()
    cmd, env = server_command("lmforge", cfg, port)
    print(f"[load] {' '.join(cmd)}", flush=True)
    with serve(cmd, env, port, work / "lmforge.log") as (proc, model, _ready):
        args.cases, client = malformed_bodies(model), Client(port)
        run_mix(port, model, args.warmup, args.concurrency, seed=1, args=args)
        idle_before, _, before = wait_idle(client)
        rss_before = vm_rss(proc.pid)
        print(f"[load] warm-up done ({args.warmup} requests), RSS {rss_before / 2**20:.1f} MiB; "
              f"{args.requests} requests at concurrency {args.concurrency}", flush=True)
        scraper = Scraper(port)
        scraper.start()
        rows, wall, retries = run_mix(port, model, args.requests, args.concurrency, seed=0, args=args)
        scraper.halt.set()
        scraper.join()
        idle, idle_s, after = wait_idle(client)
        rss_after = vm_rss(proc.pid)
        status, raw = Client(port).post(chat_body(model, PROMPTS[0], args.max_tokens, stream=False))
        final_ok = status == 200 and bool(json.loads(raw)["choices"][0]["message"]["content"])
    summary = summarize(rows, wall, retries)
    results = checks(rows, idle and idle_before, (rss_before, rss_after), final_ok)
    maxima = scraper.maxima()
    generated = after["lmforge_generation_tokens_total"] - before["lmforge_generation_tokens_total"]
    print(f"\n{summary['requests']} requests in {wall:.1f} s ({summary['requests_per_s']:.1f}/s); "
          f"{generated:.0f} tokens generated; idle {idle_s:.1f} s after the last answer; {retries} idle keep-alive "
          "connections reopened")
    for kind, k in summary["kinds"].items():
        print(f"  {kind:9s} {k['ok']}/{k['requests']} ok, statuses {k['statuses']}, p50 "
              f"{k['latency_p50'] or 0:.3f} s, p99 {k['latency_p99'] or 0:.3f} s")
    shown = ", ".join(f"{key.removeprefix('lmforge_')} {value:g}" for key, value in maxima.items() if value is not None)
    print(f"  /metrics during the run ({len(scraper.samples)} scrapes), max: {shown}")
    print("  /metrics after: " + ", ".join(f"{key.removeprefix('lmforge_')} {after[key]:g}" for key in WATCHED))
    for kind, k in summary["kinds"].items():
        for failure in k["failures"][:3]:
            print(f"  {kind} failure: {failure}")
    print("\n".join(f"{'PASS' if ok else 'FAIL'}: {what}" for what, ok in results))
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine(),
              "versions": versions(None), "model": create_cmd[3:], "server": cmd,
              "settings": {k: getattr(args, k) for k in ("requests", "concurrency", "warmup", "max_tokens",
                                                          "cancel_max_tokens")} | {"mix": MIX},
              "malformed_cases": [name for name, _ in args.cases], "summary": summary,
              "rss_bytes": {"before": rss_before, "after": rss_after}, "metrics_max": maxima,
              "metrics_before": before, "metrics_after": after, "metrics_samples": scraper.samples,
              "generated_tokens": generated, "checks": [{"check": what, "pass": ok} for what, ok in results]}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1))
    print(f"[load] results: {out_path}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
