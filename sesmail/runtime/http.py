"""A minimal keep-alive HTTP client on the standard library.

The Lambda archive ships no third-party packages, so this replaces ``requests``: it reuses one
connection per host across warm invocations (saving a TLS handshake per message) and sends
request bodies from iterators, which is what lets a 40 MB message stream from S3 to Gmail
without being held in memory.
"""

from __future__ import annotations

import email.utils
import http.client
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

Body = bytes | Iterable[bytes] | None

#: Reconnect before sending on a connection idle longer than this: servers (Google's
#: included) drop idle keep-alive connections, and a streamed body cannot be replayed.
MAX_IDLE_SECONDS = 20.0
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class HttpClient:
    """Not thread-safe: one per Lambda container, used by one invocation at a time."""

    def __init__(self, *, max_idle_seconds: float = MAX_IDLE_SECONDS) -> None:
        self._connections: dict[tuple[str, str, int], tuple[http.client.HTTPConnection, float]] = {}
        self._max_idle = max_idle_seconds

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(key, timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            raw = conn.getresponse()
            response = Response(raw.status, dict(raw.getheaders()), raw.read())
        except BaseException:
            self._drop(key)
            raise
        if raw.will_close:
            self._drop(key)
        else:
            self._connections[key] = (conn, time.monotonic())
        return response

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)

    def _connection(self, key: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        cached = self._connections.get(key)
        if cached is not None:
            conn, last_used = cached
            if time.monotonic() - last_used <= self._max_idle:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn
            self._drop(key)
        scheme, host, port = key
        conn_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_class(host, port, timeout=timeout)
        self._connections[key] = (conn, time.monotonic())
        return conn

    def _drop(self, key: tuple[str, str, int]) -> None:
        cached = self._connections.pop(key, None)
        if cached is not None:
            cached[0].close()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
