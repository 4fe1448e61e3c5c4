"""`lmforge api CONFIG`: serve a model over OpenAI's chat completions API.

    lmforge api examples/chat.yaml                    # http://127.0.0.1:8000/v1
    API_KEY=secret lmforge api examples/chat.yaml --port 8001

Binds 127.0.0.1 unless `--host` (or API_HOST) says otherwise. `API_KEY` turns on bearer-token auth;
`API_MODEL_NAME` sets the model id clients ask for (default: the adapter's or model's directory name).
"""

from __future__ import annotations

import argparse
import os
import sys

from lmforge.config import load_inference_config
from lmforge.errors import ConfigError


def api_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge api", description="Serve a model over an OpenAI-compatible API.")
    parser.add_argument("config", help="YAML/JSON with model_name_or_path (and adapter_name_or_path, template, ...)")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    parser.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default API_PORT or 8000)")
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else int(os.environ.get("API_PORT", "8000"))
    except ValueError:
        raise ConfigError(f"API_PORT must be a port number, got {os.environ['API_PORT']!r}") from None

    cfg = load_inference_config(args.config, args.overrides)  # config errors before torch loads
    import uvicorn

    from lmforge.inference.api.app import create_app
    from lmforge.inference.engine import ChatEngine

    engine = ChatEngine(cfg)
    api_key = os.environ.get("API_KEY") or None
    app = create_app(engine, api_key=api_key, model_name=os.environ.get("API_MODEL_NAME") or None)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"lmforge api: warning: serving on {args.host} without API_KEY: anyone who can reach this port "
              "can use the model", file=sys.stderr)
    served = os.environ.get("API_MODEL_NAME") or engine.model_name
    print(f"lmforge api: serving '{served}' (template {engine.template.name}) at http://{args.host}:{port}/v1"
          f"{' (API key required)' if api_key else ''}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=port, log_level="warning")
    finally:
        engine.close()
    return 0
