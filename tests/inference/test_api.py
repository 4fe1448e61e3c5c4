"""`lmforge api`: the real server in a subprocess on a free local port, driven by the official openai client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

from lmforge.config import load_inference_config
from lmforge.inference.engine import ChatEngine

KEY = "test-key-123"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def http(url: str, body: bytes | None = None, key: str | None = KEY) -> tuple[int, dict]:
    """Status and JSON body of a raw request (GET without a body, POST with one)."""
    request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model_dir) -> Path:
    path = tmp_path_factory.mktemp("api") / "serve.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "template": "qwen",
                                    "do_sample": False, "max_new_tokens": 8}))
    return path


@pytest.fixture(scope="module")
def server(config):
    port = free_port()
    log = config.parent / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "api", str(config), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "API_KEY": KEY})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if http(f"{base}/v1/models")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    yield {"base": base, "port": port, "log": log}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_binds_loopback_only_and_requires_the_key(server, client):
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:] if Path("/proc/net/tcp").exists() else []
    mine = [line.split()[1] for line in listening if line.split()[1].endswith(f":{server['port']:04X}")
            and line.split()[3] == "0A"]
    if listening:
        assert mine == [f"0100007F:{server['port']:04X}"]  # 127.0.0.1, not 0.0.0.0
    assert f"http://127.0.0.1:{server['port']}/v1" in server["log"].read_text()

    stranger = openai.OpenAI(base_url=server["base"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        stranger.models.list()
    assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
    status, body = http(server["base"] + "/v1/models", key=None)
    assert status == 401 and "API key" in body["error"]["message"]
    assert [m.id for m in client.models.list().data] == ["tiny-qwen2"]


def test_answers_equal_the_engine_and_streaming_equals_non_streaming(config, client):
    engine = ChatEngine(load_inference_config(str(config)))
    expected = engine.reply(HELLO, max_new_tokens=6)
    whole = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=6)
    assert whole.choices[0].message.content == expected
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage.prompt_tokens == len(engine.prompt_ids(HELLO))
    assert whole.usage.completion_tokens == 6 and whole.choices[0].finish_reason == "length"
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 6

    chunks = list(client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1 and "".join(content) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6

    # temperature 0 is greedy; a vanishing top_p keeps only the most likely token, so sampling is greedy too
    zero = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=6, temperature=0)
    narrow = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=6, temperature=1.0,
                                            top_p=1e-9)
    assert zero.choices[0].message.content == narrow.choices[0].message.content == expected


def test_stop_strings_and_n_sampled_choices(client):
    full = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=8).choices[0].message.content
    stop = full[len(full) // 2:][:2]
    cut = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=8, stop=["never", stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"

    def sample(seed):
        return client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=8, n=3,
                                              temperature=1.0, seed=seed)

    first, again, other = sample(7), sample(7), sample(8)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len(set(texts)) == 3  # random weights: all differ
    assert texts == [c.message.content for c in again.choices]  # seeded sampling repeats
    assert texts != [c.message.content for c in other.choices]
    assert first.usage.completion_tokens == 3 * 8

    streamed = client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=8, n=3,
                                              temperature=1.0, seed=7, stream=True)
    pieces = {0: "", 1: "", 2: ""}
    for chunk in streamed:
        for choice in chunk.choices:
            pieces[choice.index] += choice.delta.content or ""
    assert [pieces[i] for i in range(3)] == texts


def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(server, client):
    url = server["base"] + "/v1/chat/completions"
    cases = {
        b'{"model": "tiny-qwen2", "messages": [': 400,                                   # not JSON
        b'[1, 2]': 400,                                                                  # not an object
        json.dumps({"model": "tiny-qwen2"}).encode(): 400,                               # no messages
        json.dumps({"model": "tiny-qwen2", "messages": HELLO, "temperature": 5}).encode(): 400,
        json.dumps({"model": "tiny-qwen2", "messages": [{"role": "robot", "content": "x"}]}).encode(): 400,
        json.dumps({"model": "tiny-qwen2", "messages": [{"role": "assistant", "content": "x"}]}).encode(): 400,
    }
    for body, status in cases.items():
        code, reply = http(url, body)
        assert code == status, body
        assert reply["error"]["message"], body

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert unknown.value.code == "model_not_found" and "tiny-qwen2" in unknown.value.message
    long_prompt = [{"role": "user", "content": "hello world " * 4000}]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny-qwen2", messages=long_prompt)
    assert too_long.value.code == "context_length_exceeded" and "4096" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as budget:
        client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=5000)
    assert budget.value.code == "context_length_exceeded"
    assert client.chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=2).usage.completion_tokens == 2


def test_sixteen_concurrent_requests_each_get_their_own_answer(client):
    def ask(i: int) -> str:
        messages = [{"role": "user", "content": f"Tell me about number {i}."}]
        kwargs = {"model": "tiny-qwen2", "messages": messages, "max_tokens": 8, "temperature": 1.0, "seed": i}
        if i % 2:  # half streamed, half not
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs,
                                                                                                  stream=True))
        return client.chat.completions.create(**kwargs).choices[0].message.content

    alone = [ask(i) for i in range(16)]
    assert len(set(alone)) == 16  # otherwise a mix-up could go unseen
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, range(16)))
    assert together == alone


def test_a_client_that_leaves_mid_stream_stops_its_generation(config):
    """Scheduler level, in process: a cancelled job stops within a token or two and the next job runs."""
    import asyncio

    from lmforge.inference.api.scheduler import Finished, Job, Scheduler

    engine = ChatEngine(load_inference_config(str(config)))
    forwards = []
    engine.model.register_forward_hook(lambda *args: forwards.append(1))
    prompt = engine.prompt_ids(HELLO)

    async def scenario():
        scheduler = Scheduler(engine)
        long_job = scheduler.submit(Job(prompt, overrides={"max_new_tokens": 3000, "min_new_tokens": 3000}))
        seen = 0
        async for _event in long_job.events():
            seen += 1
            if seen == 3:
                long_job.cancelled.set()  # what the SSE response does when its client disconnects
                break
        short = scheduler.submit(Job(prompt, overrides={"max_new_tokens": 4}))
        events = [event async for event in short.events()]
        scheduler.shutdown()
        return events

    events = asyncio.run(asyncio.wait_for(scenario(), timeout=300))
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 4
    assert len(forwards) < 50  # the 3000-token generation stopped right after the cancel
    assert engine._lock.acquire(blocking=False)  # and released the engine
    engine._lock.release()
