"""The FastAPI application: `/v1/models` and `/v1/chat/completions` (JSON or server-sent events).

Every error is OpenAI's JSON envelope with a 4xx status for the client's mistakes (400 malformed body or
over-long prompt, 401 missing or wrong key, 404 unknown model) and 500 for ours. An error response leaves the
keep-alive connection open for the client's next request, and a request whose client has gone is cancelled at
once, whether it streams or not, so an abandoned answer never holds the queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import UserError
from lmforge.inference.api.metrics import prometheus_text
from lmforge.inference.api.protocol import ChatCompletionRequest, completion_id, error_body, now
from lmforge.inference.api.scheduler import Finished, Job, Scheduler

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def create_app(engine, api_key: str | None = None, model_name: str | None = None) -> FastAPI:
    """The server for `engine` (a ChatEngine). With `api_key`, requests need `Authorization: Bearer KEY`."""
    scheduler = Scheduler(engine)
    served = model_name or engine.model_name
    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler

    def problem(exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem(ApiError(exc.status_code, str(exc.detail), kind="invalid_request_error"))

    # Not `exception_handler(Exception)`: Starlette runs that one in its outermost middleware, which re-raises
    # after answering, and uvicorn then closes the connection, failing the client's next request on it.
    app.add_middleware(_Guard, api_key=api_key, problem=problem)

    @app.get("/metrics")
    async def metrics():
        return Response(prometheus_text(scheduler.stats()), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": served, "object": "model", "created": now(), "owned_by": "lmforge"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = _parse(await request.body())
        if body.model != served:
            raise ApiError(404, f"model '{body.model}' is not served here; this server serves '{served}'",
                           param="model", code="model_not_found")
        job = Job(**_plan(engine, body))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(scheduler, job, served, include_usage, request.receive),
                                     media_type="text/event-stream")
        return await _whole(scheduler, job, served, request.receive)

    return app


class _Guard:
    """Around every request: the API key check, and a 500 in OpenAI's shape for a bug, answered without
    re-raising so the connection stays usable (a plain ASGI middleware: no extra task per request)."""

    def __init__(self, app, api_key: str | None, problem):
        self.app, self.problem = app, problem
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                denied = ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <API_KEY>'",
                                  kind="authentication_error", code="invalid_api_key")
                return await self.problem(denied)(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - a bug answers this request only, the server keeps serving
            logger.exception("request failed")
            if started:  # half a response is out: only closing the connection tells the client it is cut short
                raise
            bug = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")
            await self.problem(bug)(scope, receive, send)


def _parse(raw: bytes) -> ChatCompletionRequest:
    """The request body (JSON whatever the Content-Type, so plain `curl -d` works), or a 400 naming the field."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_a_number)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not UTF-8 text: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON this server can read: it is nested too deeply") \
            from None
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of more than 4300 digits
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if (where := _lone_surrogate(data)) is not None:
        raise ApiError(400, f"{where}: contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is "
                       "not text", param=where)
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # `at`: the field a model-level rule is about (messages.3.role), as pydantic's loc stops at the model
        parts = (*first["loc"], (first.get("ctx") or {}).get("at", ""))
        where = ".".join(str(part) for part in parts if part != "")
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where or None) from None


def _not_a_number(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(data) -> str | None:
    """The path of the first string holding a lone surrogate (JSON allows `"\\ud800"`; no tokenizer or UTF-8
    encoder does), or None. Iterative: the body may be nested as deep as json.loads allows."""
    stack = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where or "body"
        elif isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
            stack.extend((f"{where} (a key)" if where else "a key", key) for key in value)
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", item) for i, item in enumerate(value))
    return None


def _plan(engine, body: ChatCompletionRequest) -> dict:
    """The job for a request, or an ApiError before anything is generated (a bad role, a prompt too long)."""
    try:
        prompt = engine.prompt_ids(body.openai_messages())
    except UserError as exc:
        raise ApiError(400, str(exc), param="messages") from exc
    budget = body.token_budget()
    room = (engine.max_context - len(prompt)) if engine.max_context else None
    capacity = engine.generation.max_batch_tokens - len(prompt)  # the engine's KV-cache bound (max_batch_tokens)
    room = capacity if room is None else min(room, capacity)
    limit = min(n for n in (engine.max_context, engine.generation.max_batch_tokens) if n)
    if room < 1:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this server takes {limit} tokens of prompt and "
                       "answer", param="messages", code="context_length_exceeded")
    if budget is not None and budget > room:
        raise ApiError(400, f"prompt ({len(prompt)} tokens) + max_tokens ({budget}) exceeds the {limit} tokens of "
                       "prompt and answer this server takes (the model's context, or max_batch_tokens)",
                       param="max_tokens", code="context_length_exceeded")
    temperature = body.temperature
    params = engine.sampling_params(max_new_tokens=budget or min(engine.generation.max_new_tokens, room),
                                    temperature=temperature, top_p=body.top_p, seed=body.seed,
                                    do_sample=None if temperature is None else temperature > 0)
    return {"prompt": prompt, "params": params, "n": body.n, "stop": body.stop or []}


async def _cancel_when_gone(receive, job: Job) -> None:
    """Cancel `job` once its client disconnects. The body has been read, so the server's next message for this
    request is the disconnect (Starlette notices it for a streamed response only when a write fails, and
    never for a plain one, while the job may hold the queue for seconds)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()


async def _whole(scheduler: Scheduler, job: Job, model: str, receive) -> dict | Response:
    scheduler.submit(job)
    watcher = asyncio.create_task(_cancel_when_gone(receive, job))
    texts, finished = [""] * job.n, [None] * job.n
    try:
        async for event in job.events():
            if isinstance(event, Finished):
                finished[event.index] = event
            else:
                texts[event.index] += event.text
    finally:
        watcher.cancel()
    if job.cancelled.is_set():
        return Response(status_code=499)  # nginx's "client closed request": nobody is left to read it
    completion_tokens = sum(f.completion_tokens for f in finished)
    return {
        "id": completion_id(), "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                     "finish_reason": finished[i].finish_reason, "logprobs": None} for i in range(job.n)],
        "usage": {"prompt_tokens": len(job.prompt), "completion_tokens": completion_tokens,
                  "total_tokens": len(job.prompt) + completion_tokens},
    }


async def _sse(scheduler: Scheduler, job: Job, model: str, include_usage: bool, receive):
    """Server-sent events: a role chunk per choice, content chunks, a finish chunk each, then [DONE]."""
    ident, created = completion_id(), now()

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    scheduler.submit(job)
    watcher = asyncio.create_task(_cancel_when_gone(receive, job))
    started, completion_tokens = set(), 0
    try:
        async for event in job.events():
            if event.index not in started:
                started.add(event.index)
                yield chunk([{"index": event.index, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None}])
            if isinstance(event, Finished):
                completion_tokens += event.completion_tokens
                yield chunk([{"index": event.index, "delta": {}, "finish_reason": event.finish_reason}])
            elif event.text:
                yield chunk([{"index": event.index, "delta": {"content": event.text}, "finish_reason": None}])
    except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes into the stream
        logger.exception("generation failed mid-stream")
        yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
        return
    finally:
        watcher.cancel()
        job.cancel()  # a client that left stops its generation; a finished job ignores this
    if include_usage:
        usage = {"prompt_tokens": len(job.prompt), "completion_tokens": completion_tokens,
                 "total_tokens": len(job.prompt) + completion_tokens}
        yield chunk([], usage)
    yield "data: [DONE]\n\n"
