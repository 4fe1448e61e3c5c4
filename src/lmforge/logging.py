"""One logger for the package; rank-0 only under distributed runs."""

from __future__ import annotations

import logging
import os


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    root = logging.getLogger("lmforge")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[lmforge %(levelname)s] %(message)s"))
        root.addHandler(handler)
        is_main = os.environ.get("RANK", "0") == "0"
        root.setLevel(logging.INFO if is_main else logging.WARNING)
        root.propagate = False
    return logger
