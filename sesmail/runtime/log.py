"""Structured JSON logging: one object a line, queryable in CloudWatch Logs Insights.

Every line carries ``level``, ``message``, ``event`` and the bound context (``env``,
``requestId``, ``messageId``). Secrets never belong in a log call; as a second line of
defence, every value registered with :func:`register_secret` is masked in the final line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

LOGGER_NAME = "sesmail"
REDACTED = "[REDACTED]"

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "sesmail_log_context", default=MappingProxyType({})
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# Attributes every LogRecord has; anything else in record.__dict__ came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def register_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line (tokens, client secrets)."""
    if value and len(value) >= 8:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        entry.update(_context.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at emit time (Lambda ships stdout to CloudWatch Logs)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """A logger under ``sesmail`` writing JSON lines; configured once per process."""
    root = logging.getLogger(LOGGER_NAME)
    if not getattr(root, "_sesmail_configured", False):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        # Lambda's runtime installs its own plain-text handler on the root logger.
        root.propagate = False
        root._sesmail_configured = True  # type: ignore[attr-defined]
    return logging.getLogger(name)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add fields (requestId, messageId, ...) to every line logged inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)
