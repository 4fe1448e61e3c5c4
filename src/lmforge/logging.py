"""One logger for the package; rank-0 only under distributed runs."""

from __future__ import annotations

import logging
import os
import sys


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is now: a handler that kept the stream it was created with wrote into a
    closed stream once that was swapped (pytest's capture, a redirect), printing 'Logging error' tracebacks."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    root = logging.getLogger("lmforge")
    if not root.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("[lmforge %(levelname)s] %(message)s"))
        root.addHandler(handler)
        is_main = os.environ.get("RANK", "0") == "0"
        root.setLevel(logging.INFO if is_main else logging.WARNING)
        root.propagate = False
    return logger
