"""`lmforge webui`: the browser front door, at http://127.0.0.1:7860.

    lmforge webui                              # runs under ./saves, this machine only
    lmforge webui --root runs --port 7861
    WEBUI_TOKEN=secret lmforge webui --host 0.0.0.0   # exposed: a token is required (open /?token=secret)

Binds 127.0.0.1 unless `--host` says otherwise; any other address needs `--token` (or WEBUI_TOKEN), as the API
needs API_KEY to be safe when exposed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lmforge.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def webui_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge webui", description="Configure, train, watch, evaluate, chat "
                                     "with and export runs from a browser.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--root", default="saves", help="where runs are written and found (default ./saves)")
    parser.add_argument("--token", default=os.environ.get("WEBUI_TOKEN"),
                        help="required on every request (default WEBUI_TOKEN); needed when --host is not loopback")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK and not args.token:
        raise ConfigError(f"lmforge webui --host {args.host}: anyone who can reach this port could train and run "
                          "code paths on this machine; set --token (or WEBUI_TOKEN) to expose it")
    import uvicorn

    from lmforge.webui.app import create_app

    root = Path(args.root).resolve()
    app = create_app(root, token=args.token)
    query = "/?token=<token>" if args.token else ""
    print(f"lmforge webui: http://{args.host}:{args.port}{query} (runs under {root})", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.runs.close()
    return 0
