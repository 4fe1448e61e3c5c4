"""The FastAPI application: `/v1/models` and `/v1/chat/completions` (JSON or server-sent events).

Every error is OpenAI's JSON envelope with a 4xx status for the client's mistakes (400 malformed body or
over-long prompt, 401 missing or wrong key, 404 unknown model) and 500 for ours; the server keeps serving.
"""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import FastAPI, Request
from pydantic import ValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import UserError
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
    app.router.add_event_handler("shutdown", scheduler.shutdown)

    def problem(exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem(ApiError(exc.status_code, str(exc.detail), kind="invalid_request_error"))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        logger.exception("request failed")
        return problem(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"))

    @app.middleware("http")
    async def _authenticate(request: Request, call_next):
        if api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return problem(ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <API_KEY>'",
                                        kind="authentication_error", code="invalid_api_key"))
        return await call_next(request)

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
            return StreamingResponse(_sse(scheduler, job, served, include_usage), media_type="text/event-stream")
        return await _whole(scheduler, job, served)

    return app


def _parse(raw: bytes) -> ChatCompletionRequest:
    """The request body (JSON whatever the Content-Type, so plain `curl -d` works), or a 400 naming the field."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where or None) from None


def _plan(engine, body: ChatCompletionRequest) -> dict:
    """The job for a request, or an ApiError before anything is generated (a bad role, a prompt too long)."""
    try:
        prompt = engine.prompt_ids(body.openai_messages())
    except UserError as exc:
        raise ApiError(400, str(exc), param="messages") from exc
    budget = body.token_budget()
    room = (engine.max_context - len(prompt)) if engine.max_context else None
    if room is not None and room < 1:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this model's context is {engine.max_context}",
                       param="messages", code="context_length_exceeded")
    if room is not None and budget is not None and budget > room:
        raise ApiError(400, f"prompt ({len(prompt)} tokens) + max_tokens ({budget}) exceeds this model's context "
                       f"of {engine.max_context} tokens", param="max_tokens", code="context_length_exceeded")
    overrides: dict = {"max_new_tokens": budget or min(engine.generation.max_new_tokens, room or 1 << 30)}
    if body.temperature is not None:
        overrides["temperature"] = body.temperature
        overrides["do_sample"] = body.temperature > 0
    if body.top_p is not None:
        overrides["top_p"] = body.top_p
    return {"prompt": prompt, "n": body.n, "stop": body.stop or [], "seed": body.seed, "overrides": overrides}


async def _whole(scheduler: Scheduler, job: Job, model: str) -> dict:
    scheduler.submit(job)
    texts, finished = [""] * job.n, [None] * job.n
    async for event in job.events():
        if isinstance(event, Finished):
            finished[event.index] = event
        else:
            texts[event.index] += event.text
    completion_tokens = sum(f.completion_tokens for f in finished)
    return {
        "id": completion_id(), "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                     "finish_reason": finished[i].finish_reason, "logprobs": None} for i in range(job.n)],
        "usage": {"prompt_tokens": len(job.prompt), "completion_tokens": completion_tokens,
                  "total_tokens": len(job.prompt) + completion_tokens},
    }


async def _sse(scheduler: Scheduler, job: Job, model: str, include_usage: bool):
    """Server-sent events: a role chunk per choice, content chunks, a finish chunk each, then [DONE]."""
    ident, created = completion_id(), now()

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    scheduler.submit(job)
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
        job.cancelled.set()  # a client that left stops its generation; a finished job ignores this
    if include_usage:
        usage = {"prompt_tokens": len(job.prompt), "completion_tokens": completion_tokens,
                 "total_tokens": len(job.prompt) + completion_tokens}
        yield chunk([], usage)
    yield "data: [DONE]\n\n"
