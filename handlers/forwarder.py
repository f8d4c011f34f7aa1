"""Lambda entry point of the Gmail forwarder: a thin adapter onto :mod:`sesmail.runtime.forwarder`.

The forwarder (its AWS clients, HTTP connections and cached access token) is built on the
first invocation and reused while the container stays warm.
"""

from __future__ import annotations

from typing import Any

from sesmail.runtime.forwarder import Forwarder

_forwarder: Forwarder | None = None


def handler(event: Any, context: Any) -> dict[str, Any]:
    global _forwarder
    if _forwarder is None:
        _forwarder = Forwarder.from_environ()
    return _forwarder.handle(event, context)


def reset() -> None:
    """Forget the warm state (tests use it to simulate a cold start)."""
    global _forwarder
    _forwarder = None
