"""The web UI's server: a FastAPI app over the same config checks, subprocesses, logs and engine as the CLI.

    app = create_app(root=Path("saves"), token=None)     # lmforge webui serves it with uvicorn

Pages are static files (webui/static: one HTML page, its script and style; no CDN, nothing fetched from outside).
The JSON API under /api: the config schema and its validation as the user types, datasets and their preview,
template detection, runs (start, stop, state with the trainer log), eval / check / export / predict jobs, and chat
streamed as server-sent events from a ChatEngine (the engine `lmforge chat` and `api` use). With a token, every
request needs it: `?token=` once (it is then kept in a cookie), or the `X-Lmforge-Token` header.
"""

from __future__ import annotations

import hmac
import json
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lmforge.errors import UserError
from lmforge.webui import form
from lmforge.webui.runs import CONFIG_FILE, Runs

STATIC = Path(__file__).parent / "static"
COOKIE = "lmforge_webui_token"


def create_app(root: Path, token: str | None = None) -> FastAPI:
    runs = Runs(root)
    chats = _Chats()
    app = FastAPI(title="lmforge webui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = runs
    app.router.add_event_handler("shutdown", chats.close)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None:
            given = (request.query_params.get("token") or request.headers.get("x-lmforge-token")
                     or request.cookies.get(COOKIE) or "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "this UI needs its token: open it with ?token=<token>"}, 401)
        try:
            response = await call_next(request)
        except UserError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/schema")
    async def schema():
        return form.schema()

    @app.post("/api/validate")
    async def validate(request: Request):
        return form.check(await request.json())

    @app.get("/api/datasets")
    async def datasets(dataset_dir: str = "data"):
        info = _resolve(root, dataset_dir) / "dataset_info.json"
        if not info.exists():
            return {"datasets": [], "error": f"no dataset_info.json in {info.parent}"}
        try:
            return {"datasets": sorted(json.loads(info.read_text(encoding="utf-8"))), "error": None}
        except ValueError as exc:
            return {"datasets": [], "error": f"{info}: not valid JSON: {exc}"}

    @app.get("/api/template")
    async def template(model: str):
        return _detect_template(model)

    @app.post("/api/preview")
    async def preview(request: Request):
        return {"html": _preview_html(await request.json(), root)}

    @app.post("/api/yaml")
    async def load_yaml(request: Request):
        import yaml

        try:
            values = yaml.safe_load(await request.body()) or {}
        except yaml.YAMLError as exc:
            return JSONResponse({"error": f"not YAML: {exc}"}, 400)
        if not isinstance(values, dict):
            return JSONResponse({"error": "the file must hold a mapping of keys to values"}, 400)
        return {"values": values, **form.check(values)}

    @app.get("/api/runs")
    async def list_runs():
        return {"runs": runs.list()}

    @app.post("/api/runs")
    async def start_run(request: Request):
        values = form.clean(await request.json())
        checked = form.check(values)
        if not checked["ok"]:
            return JSONResponse(checked, 400)
        try:
            job = runs.start(values)
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return {"id": job.id}

    @app.get("/api/run")
    async def run_state(id: str):
        return runs.state(id)

    @app.post("/api/run/stop")
    async def stop_run(id: str):
        return {"stopping": runs.stop(id)}

    @app.post("/api/jobs")
    async def start_job(request: Request):
        body = await request.json()
        kind, run_dir = body.get("kind"), Path(body.get("run", ""))
        if kind not in ("eval", "check", "export"):
            return JSONResponse({"error": f"unknown job kind {kind!r}"}, 400)
        config = _job_config(kind, run_dir, body.get("values") or {})
        job = runs.run_command(kind, [kind, str(config)], config.parent)
        return {"id": job.id, "output": str(config.parent)}

    @app.get("/api/job")
    async def job_state(id: str):
        state = runs.job(id)
        finished = state["status"] == "finished"
        state["result"] = _job_result(state["kind"], Path(state["output"])) if finished else None
        return state

    @app.post("/api/chat")
    async def chat(request: Request):
        body = await request.json()
        engine = chats.engine_for(Path(body["run"]))
        overrides = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
        if body.get("max_tokens"):
            overrides["max_new_tokens"] = int(body["max_tokens"])
        completion = engine.stream(body["messages"], system=body.get("system") or None, **overrides)

        def events():
            try:
                for piece in completion:
                    yield f"data: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
                yield f"data: {json.dumps({'done': completion.finish_reason})}\n\n"
            except Exception as exc:  # noqa: BLE001 - shown in the chat, the UI stays up
                yield f"data: {json.dumps({'error': str(exc)})}\n\n"
            finally:
                completion.close()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class _Chats:
    """One ChatEngine at a time (a model in memory), for the run being chatted with."""

    def __init__(self):
        self._run: Path | None = None
        self._engine = None
        self._lock = threading.Lock()

    def engine_for(self, run_dir: Path):
        from lmforge.config import load_inference_config
        from lmforge.inference.engine import ChatEngine

        with self._lock:
            if self._run != run_dir:
                self.close_unlocked()
                self._engine = ChatEngine(load_inference_config(None, _model_keys(run_dir)))
                self._run = run_dir
            return self._engine

    def close_unlocked(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._run = None, None

    def close(self) -> None:
        with self._lock:
            self.close_unlocked()


def _model_keys(run_dir: Path) -> list[str]:
    """key=value overrides that load a run's result: its adapter over its base, or its full model."""
    adapter = run_dir / "adapter_config.json"
    if adapter.exists():
        base = _run_values(run_dir).get("model_name_or_path") or json.loads(adapter.read_text())["base_model_name_or_path"]
        return [f"model_name_or_path={base}", f"adapter_name_or_path={run_dir}"]
    return [f"model_name_or_path={run_dir}"]


def _run_values(run_dir: Path) -> dict:
    return _yaml_values(run_dir / CONFIG_FILE)


def _job_config(kind: str, run_dir: Path, values: dict) -> Path:
    """The YAML a tab's job runs: the run's model keys, the tab's values, an output directory beside the run."""
    import yaml

    keys = dict(item.split("=", 1) for item in _model_keys(run_dir))
    out = run_dir / f"webui_{kind}"
    if kind == "eval":
        config = {**keys, **values, "output_path": str(out)}
    elif kind == "check":
        config = {**keys, "check": {**values, "output_dir": str(out)}}
    else:
        config = {**keys, **values, "export_dir": str(values.get("export_dir") or run_dir / "exported")}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _job_result(kind: str, out: Path) -> dict | None:
    if kind == "eval" and (out / "results.json").exists():
        return json.loads((out / "results.json").read_text())
    if kind == "check" and (out / "check_report.json").exists():
        return json.loads((out / "check_report.json").read_text())
    if kind == "export":
        config = _yaml_values(out / "export.yaml")
        return {"export_dir": config.get("export_dir")}
    return None


def _yaml_values(path: Path) -> dict:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def _detect_template(model: str) -> dict:
    from lmforge.data.templates import TEMPLATES
    from lmforge.run_info import trained_template

    choices = ["auto", *sorted(TEMPLATES.names())]
    detected, why = None, ""
    if model and not Path(model).is_dir():  # an id in the local Hugging Face cache
        from lmforge.hub_cache import resolve_hub_id

        model = str(resolve_hub_id(model) or model)
    if model:
        detected = trained_template(None, model)
        why = "the run's template (lmforge_run.json)" if detected else ""
        if detected is None:
            config = Path(model) / "tokenizer_config.json"
            if config.exists() and "chat_template" in json.loads(config.read_text(encoding="utf-8")):
                detected, why = "auto", "the tokenizer's own chat template"
            elif (Path(model) / "chat_template.jinja").exists():
                detected, why = "auto", "the tokenizer's own chat template"
    return {"detected": detected, "why": why, "choices": choices}


def _preview_html(values: dict, root: Path) -> str:
    """`lmforge data preview`'s page for the form's config (three samples, trained tokens marked); a relative
    dataset_dir is under the root, as for the run."""
    from lmforge.config.loader import build_config
    from lmforge.data.templates import resolve_template
    from lmforge.model.tokenizer import load_tokenizer
    from lmforge.tools.data_preview import preview_samples, render_html

    values = form.clean(values)
    values["dataset_dir"] = str(_resolve(root, str(values.get("dataset_dir", "data"))))
    cfg = build_config(values, source="webui")
    tokenizer = load_tokenizer(cfg.model)
    template = resolve_template(cfg.data.template, tokenizer, cfg.data.enable_thinking)
    return render_html(preview_samples(cfg, tokenizer, template, 3), cfg.data.cutoff_len)
