"""`lmforge api`: the real server in a subprocess on a free local port, driven by the official openai client;
and the same app served in this process (uvicorn on a thread) where a test needs to see the model work."""

from __future__ import annotations

from http.client import HTTPConnection
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
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
    # a choice cut by max_tokens counts 8 tokens; one ended by its stop token 1 to 8, that token included
    cut_short = sum(c.finish_reason == "length" for c in first.choices)
    assert 8 * cut_short + (3 - cut_short) <= first.usage.completion_tokens <= 3 * 8
    assert first.usage.completion_tokens == again.usage.completion_tokens

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
    """Scheduler level, in process: a cancelled job's request leaves the engine within a step or two, and the next
    job runs to its end."""
    import asyncio

    from lmforge.inference.api.scheduler import Finished, Job, Scheduler

    engine = ChatEngine(load_inference_config(str(config)))
    prompt = engine.prompt_ids(HELLO)
    never = ()  # no stop token: the long answer can only end by its length or its cancellation

    async def scenario():
        scheduler = Scheduler(engine)
        params = engine.sampling_params(max_new_tokens=3000)
        long_job = scheduler.submit(Job(prompt, replace(params, stop_token_ids=never)))
        seen = 0
        async for _event in long_job.events():
            seen += 1
            if seen == 3:
                long_job.cancel()  # what the SSE response does when its client disconnects
                break
        short = scheduler.submit(Job(prompt, engine.sampling_params(max_new_tokens=4)))
        events = [event async for event in short.events()]
        return events

    events = asyncio.run(asyncio.wait_for(scenario(), timeout=300))
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 4
    assert engine.loop.engine.generated_tokens < 50  # the 3000-token answer stopped right after the cancel
    assert engine.loop.stats()["running"] == 0 and engine.loop.engine.cached_tokens == 0  # and left the cache
    engine.close()


# --- malformed bodies, keep-alive, abandoned requests, load -------------------------------------------------------

def body(**fields) -> bytes:
    return json.dumps({"model": "tiny-qwen2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                       **fields}).encode()


USER = {"role": "user", "content": "hi"}
CALL = {"role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
ANSWER = {"role": "tool", "tool_call_id": "c1", "content": "42"}
# (what is wrong, the body, the `param` the error must name; None where no single field is to blame)
MALFORMED = [
    ("seed past int64", body(seed=10**30), "seed"),
    ("seed below int64", body(seed=-10**30), "seed"),
    ("seed 2**64", body(seed=2**64), "seed"),
    ("seed of 5000 digits", body()[:-1] + b', "seed": ' + b"9" * 5000 + b"}", None),
    ("a list nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, None),
    ("an object nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None),
    ("messages nested 100,000 deep", b'{"model": "tiny-qwen2", "messages": ' + b"[" * 100_000 + b"]" * 100_000
     + b"}", None),
    ("not JSON", b'{"model": "tiny-qwen2", "messages": [', None),
    ("empty body", b"", None),
    ("not UTF-8", b'{"model": "tiny-qwen2", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
    ("UTF-16", body().decode().encode("utf-16"), None),
    ("NaN", body()[:-1] + b', "temperature": NaN}', None),
    ("Infinity", body()[:-1] + b', "top_p": Infinity}', None),
    ("a lone surrogate", body(messages=[{"role": "user", "content": "\ud800"}]), "messages.0.content"),
    ("a lone surrogate in model", body(model="\udfff"), "model"),
    ("null body", b"null", None),
    ("an array body", b"[1, 2]", None),
    ("a string body", b'"hi"', None),
    ("no model", json.dumps({"messages": [USER]}).encode(), "model"),
    ("model a number", body(model=1), "model"),
    ("no messages", json.dumps({"model": "tiny-qwen2"}).encode(), "messages"),
    ("empty messages", body(messages=[]), "messages"),
    ("messages an object", body(messages={"role": "user", "content": "hi"}), "messages"),
    ("a message a string", body(messages=["hi"]), "messages.0"),
    ("a message null", body(messages=[None]), "messages.0"),
    ("unknown role", body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
    ("role a number", body(messages=[{"role": 1, "content": "x"}]), "messages.0.role"),
    ("content a number", body(messages=[{"role": "user", "content": 1}]), "messages.0.content"),
    ("content an empty list", body(messages=[{"role": "user", "content": []}]), "messages.0.content"),
    ("content an image part", body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                                            "image_url": {"url": "x"}}]}]),
     "messages.0.content"),
    ("a text part without text", body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
     "messages.0.content"),
    ("user content null", body(messages=[{"role": "user", "content": None}]), "messages.0.content"),
    ("user content missing", body(messages=[{"role": "user"}]), "messages.0.content"),
    ("system content null", body(messages=[{"role": "system", "content": None}, USER]), "messages.0.content"),
    ("assistant content null without tool_calls", body(messages=[USER, {"role": "assistant", "content": None},
                                                                 USER]), "messages.1.content"),
    ("a tool message first", body(messages=[{"role": "tool", "tool_call_id": "c1", "content": "x"}]),
     "messages.0.role"),
    ("a tool message after a user message", body(messages=[USER, ANSWER]), "messages.1.role"),
    ("a tool message without tool_call_id", body(messages=[USER, CALL, {"role": "tool", "content": "42"}]),
     "messages.2.tool_call_id"),
    ("a tool call unanswered", body(messages=[USER, CALL, USER]), "messages.2"),
    ("tool_calls not a list", body(messages=[USER, {**CALL, "tool_calls": "x"}, ANSWER]), "messages.1.tool_calls"),
    ("tool_calls empty", body(messages=[USER, {**CALL, "tool_calls": []}, USER]), "messages.1.tool_calls"),
    ("a function message without a call", body(messages=[USER, {"role": "function", "name": "f", "content": "x"}]),
     "messages.1.role"),
    ("only a system message", body(messages=[{"role": "system", "content": "x"}]), "messages"),
    ("ends with an assistant message", body(messages=[USER, {"role": "assistant", "content": "x"}]), "messages"),
    ("max_tokens negative", body(max_tokens=-1), "max_tokens"),
    ("max_tokens 0", body(max_tokens=0), "max_tokens"),
    ("max_tokens a string", body(max_tokens="4"), "max_tokens"),
    ("max_tokens a float", body(max_tokens=2.5), "max_tokens"),
    ("max_tokens true", body(max_tokens=True), "max_tokens"),
    ("max_tokens past the context", body(max_tokens=10**30), "max_tokens"),
    ("max_completion_tokens 0", body(max_completion_tokens=0), "max_completion_tokens"),
    ("n 0", body(n=0), "n"),
    ("n negative", body(n=-1), "n"),
    ("n huge", body(n=10**30), "n"),
    ("n a string", body(n="2"), "n"),
    ("temperature 3", body(temperature=3), "temperature"),
    ("temperature negative", body(temperature=-1), "temperature"),
    ("temperature a string", body(temperature="hot"), "temperature"),
    ("temperature 1e400", body()[:-1] + b', "temperature": 1e400}', "temperature"),
    ("top_p 0", body(top_p=0), "top_p"),
    ("top_p 2", body(top_p=2), "top_p"),
    ("stop a number", body(stop=1), "stop"),
    ("stop numbers", body(stop=[1, 2]), "stop"),
    ("stop nested", body(stop=[["a"]]), "stop"),
    ("five stops", body(stop=list("abcde")), "stop"),
    ("stream a string", body(stream="yes"), "stream"),
    ("stream 2", body(stream=2), "stream"),
    ("stream_options a string", body(stream=True, stream_options="x"), "stream_options"),
    ("include_usage a string", body(stream=True, stream_options={"include_usage": "yes"}),
     "stream_options.include_usage"),
    ("logprobs a string", body(logprobs="x"), "logprobs"),
    ("frequency_penalty a string", body(frequency_penalty="x"), "frequency_penalty"),
    ("presence_penalty 3", body(presence_penalty=3), "presence_penalty"),
    ("user a number", body(user=5), "user"),
    ("tool_choice a number", body(tool_choice=5), "tool_choice"),
    ("unknown model", body(model="gpt-4o"), "model"),
]
VALID = body(max_tokens=2)


def post(conn: HTTPConnection, payload: bytes, key: str | None = None) -> tuple[int, dict]:
    """POST on `conn` (kept alive: the next call reuses its socket); the status and the JSON reply."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    conn.request("POST", "/v1/chat/completions", body=payload, headers=headers)
    reply = conn.getresponse()
    return reply.status, json.loads(reply.read() or b"null")


def assert_openai_error(status: int, reply, what: str, param: str | None = None) -> None:
    assert 400 <= status < 500, (what, status, reply)
    assert isinstance(reply, dict) and set(reply) == {"error"}, (what, reply)
    assert set(reply["error"]) == {"message", "type", "param", "code"}, (what, reply)
    assert reply["error"]["message"] and reply["error"]["type"] == "invalid_request_error", (what, reply)
    if param is not None:
        assert reply["error"]["param"] == param, (what, reply)


def test_every_malformed_body_is_a_4xx_in_openai_shape_and_keeps_the_connection(server):
    """Before: a seed past 2**64, JSON nested 100,000 deep, a 5000-digit number and a lone surrogate were 500s
    (each closing the connection, so the next request on it failed), and tool-first or null-content
    conversations, "4" for an integer and "yes" for a boolean were answered 200."""
    conn = HTTPConnection("127.0.0.1", server["port"], timeout=60)
    for what, payload, param in MALFORMED:
        status, reply = post(conn, payload, KEY)
        assert_openai_error(status, reply, what, param)
        status, reply = post(conn, VALID, KEY)  # same socket: an error must not have closed it
        assert status == 200 and reply["usage"]["completion_tokens"] == 2, (what, reply)
    conn.close()
    assert "Traceback" not in server["log"].read_text()


def test_conversations_openai_accepts_still_pass(server):
    conn = HTTPConnection("127.0.0.1", server["port"], timeout=60)
    accepted = [
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        [USER, CALL, ANSWER],  # null assistant content with tool_calls; the tool message answers the call
        [USER, {**CALL, "content": "", "function_call": None}, ANSWER],
    ]
    for messages in accepted:
        status, reply = post(conn, body(messages=messages, seed=-1, temperature=1, top_p=0.5,
                                        stream_options=None, user="me", logprobs=False), KEY)
        assert status == 200, (messages, reply)
    status, reply = post(conn, body(seed=2**63 - 1, n=2, temperature=1), KEY)  # seed + choice index passes 2**63
    assert status == 200 and len(reply["choices"]) == 2
    conn.close()


@contextmanager
def serving(app):
    """`app` under uvicorn on a thread of this process, on a free port, until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield server.config.port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def local(config):
    """The app in this process, with a count of the model's forward passes (one per generated token)."""
    from lmforge.inference.api.app import create_app

    engine = ChatEngine(load_inference_config(str(config)))
    forwards = []
    engine.model.register_forward_hook(lambda *args: forwards.append(1))
    with serving(create_app(engine)) as port:
        yield {"port": port, "engine": engine, "forwards": forwards}


def test_an_internal_error_is_a_500_that_keeps_the_connection(local, monkeypatch):
    """Before: Starlette's catch-all handler answered 500 then re-raised, and uvicorn closed the connection."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    conn = HTTPConnection("127.0.0.1", local["port"], timeout=60)
    monkeypatch.setattr(local["engine"], "prompt_ids", broken)
    status, reply = post(conn, VALID)
    assert status == 500 and reply["error"]["type"] == "server_error" and "a bug" in reply["error"]["message"]
    monkeypatch.undo()
    status, reply = post(conn, VALID)  # the same socket
    assert status == 200 and reply["usage"]["completion_tokens"] == 2
    conn.close()


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


ABANDONED = 3000  # tokens asked for; greedy, the tiny model never ends on its own first


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream-held-back"])
def test_a_request_whose_client_left_is_cancelled_at_once(local, stream):
    """Before: a non-streamed request ran to its end; a streamed one whose text was held back (here by a stop
    string's look-ahead; the streamer also holds a word until it ends) ran until a piece was due. Either way the
    next request waited behind all 3000 tokens (a 2000-token answer held the queue 3-16 s)."""
    forwards = local["forwards"]
    start = len(forwards)
    gone = HTTPConnection("127.0.0.1", local["port"], timeout=60)
    gone.request("POST", "/v1/chat/completions", body(max_tokens=ABANDONED, stream=stream, stop=["x" * 3500]),
                 {"Content-Type": "application/json"})
    wait_for(lambda: len(forwards) > start + 5)  # it is generating
    gone.sock.shutdown(socket.SHUT_RDWR)
    gone.close()
    conn = HTTPConnection("127.0.0.1", local["port"], timeout=300)
    status, reply = post(conn, VALID)
    assert status == 200 and reply["usage"]["completion_tokens"] == 2
    spent = len(forwards) - start - 3  # the valid request: a prefill and one more token
    assert spent < ABANDONED // 5, f"the abandoned request generated {spent} of {ABANDONED} tokens"
    conn.close()


def stream_text(conn: HTTPConnection, payload: bytes) -> tuple[str, str]:
    """A streamed answer read to its end on `conn`: its text and its finish_reason; asserts it ends in [DONE]."""
    conn.request("POST", "/v1/chat/completions", body=payload, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    events = [line[6:] for line in reply.read().decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(event)["choices"] for event in events[:-1]]
    text = "".join(c[0]["delta"].get("content") or "" for c in chunks if c)
    return text, [c[0]["finish_reason"] for c in chunks if c][-1]


@pytest.mark.slow
def test_2000_requests_at_concurrency_32_with_malformed_and_abandoned_ones(local):
    """10% malformed bodies (each answered 4xx in OpenAI's shape on the worker's kept-alive connection), 5%
    abandoned within 50 ms (half streamed), the rest valid (half streamed): no valid request fails or gets a 5xx,
    the abandoned ones cost few tokens though each asked for 1000, and /metrics shows the engine empty after."""
    rng = random.Random(0)
    kinds = ["malformed"] * 200 + ["abandoned"] * 100 + ["whole"] * 850 + ["stream"] * 850
    rng.shuffle(kinds)
    delays = [rng.uniform(0, 0.05) for _ in kinds]  # most leave while queued, some while being answered
    engine = local["engine"].loop.engine
    expected = post(HTTPConnection("127.0.0.1", local["port"], timeout=60), VALID)[1]["choices"][0]["message"]
    expected = expected["content"]
    start = engine.generated_tokens
    failures, mine = [], threading.local()

    def run(i: int) -> None:
        kind = kinds[i]
        if not hasattr(mine, "conn"):
            mine.conn = HTTPConnection("127.0.0.1", local["port"], timeout=120)
        try:
            if kind == "malformed":
                what, payload, param = MALFORMED[i % len(MALFORMED)]
                assert_openai_error(*post(mine.conn, payload), what, param)
            elif kind == "abandoned":
                gone = HTTPConnection("127.0.0.1", local["port"], timeout=60)
                gone.request("POST", "/v1/chat/completions", body(max_tokens=1000, stream=bool(i % 2)),
                             {"Content-Type": "application/json"})
                time.sleep(delays[i])
                gone.sock.shutdown(socket.SHUT_RDWR)
                gone.close()
            elif kind == "whole":
                status, reply = post(mine.conn, VALID)
                assert status == 200 and reply["choices"][0]["message"]["content"] == expected, reply
            else:
                assert stream_text(mine.conn, body(max_tokens=2, stream=True)) == (expected, "length")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not just the first
            failures.append((i, kind, repr(exc)[:300]))
            mine.conn.close()
            mine.conn = HTTPConnection("127.0.0.1", local["port"], timeout=120)

    began = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(run, range(len(kinds))))
    took = time.monotonic() - began
    valid = [f for f in failures if f[1] != "malformed"]
    assert not valid, f"{len(valid)} of 1800 valid requests failed, first: {valid[:5]}"
    assert not failures, f"{len(failures)} of 200 malformed bodies were not answered 4xx as OpenAI: {failures[:5]}"
    wait_for(lambda: engine.running == 0 and engine.waiting == 0)
    abandoned = engine.generated_tokens - start - 2 * (850 + 850)  # each valid request: 2 tokens
    # uncancelled, the 50 non-streamed ones alone would generate 50,000; before leaving, 50 ms at most each
    assert 0 <= abandoned < 100 * 1000 // 4, f"the 100 abandoned requests generated {abandoned} tokens"
    conn = HTTPConnection("127.0.0.1", local["port"], timeout=60)
    conn.request("GET", "/metrics")
    metrics = dict(line.split() for line in conn.getresponse().read().decode().splitlines() if line[0] != "#")
    assert metrics["lmforge_queue_length"] == metrics["lmforge_running_sequences"] == "0"
    assert metrics["lmforge_kv_cache_tokens"] == "0"
    assert int(metrics["lmforge_generation_tokens_total"]) == engine.generated_tokens
    assert post(conn, VALID)[0] == 200  # and it still answers
    print(f"2000 requests in {took:.1f} s; the 100 abandoned ones generated {abandoned} tokens")
