"""Plays the operator's browser for the refresh CLI: ``BROWSER="python fake_browser.py %s"``.

Python's :mod:`webbrowser` runs this with the consent URL, as it would run Firefox. It does what
a person's browser does when they click "Allow" on Google's consent page: GET the authorization
URL (the fake Google answers with the 302 the click would cause), then follow the redirect to the
CLI's loopback server, and its 303 to the code-free outcome page. Redirects are followed by hand,
one hop at a time, so a wrong redirect target fails loudly instead of being chased.

Environment: ``FAKE_BROWSER_LOG`` (file to append each URL to), ``FAKE_BROWSER_MODE``:
``follow`` (the default), ``ignore`` (open nothing, like an operator who walked away), or
``probe-first`` (fetch ``/favicon.ico`` from the loopback server before consenting, as browsers
and port scanners do).
Standard library only; prints nothing unless something went wrong (exit 1).
:mod:`sesmail.local.operator` points ``BROWSER`` here: the refresh CLI tests, the end-to-end
scenarios and the demo.
"""

from __future__ import annotations

import http.client
import os
import sys
from urllib.parse import parse_qs, urljoin, urlsplit


def fetch(url: str) -> tuple[int, str | None, bytes]:
    """One GET without following redirects: (status, Location, body)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"fake browser only speaks http to local servers, not {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=15)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return response.status, response.getheader("Location"), response.read()
    finally:
        conn.close()


def consent(url: str) -> str | None:
    """Click "Allow": the consent redirect, the loopback callback, its outcome page. Returns a problem or None."""
    status, location, body = fetch(url)
    if status != 302 or not location:
        return f"consent page answered {status} without a redirect: {body[:300]!r}"
    callback = location
    status, location, body = fetch(callback)
    if status != 303 or not location:
        return f"loopback callback answered {status} instead of redirecting to its outcome page: {body[:300]!r}"
    outcome_page = urljoin(callback, location)
    if urlsplit(outcome_page).netloc != urlsplit(callback).netloc or "code=" in outcome_page:
        return f"the callback redirected to {outcome_page!r}, not to a code-free page of the loopback server"
    status, _, body = fetch(outcome_page)
    if status != 200:
        return f"the outcome page {outcome_page} answered {status}: {body[:300]!r}"
    return None


def main(argv: list[str]) -> int:
    url = argv[1]
    log = os.environ.get("FAKE_BROWSER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(url + "\n")
    mode = os.environ.get("FAKE_BROWSER_MODE", "follow")
    if mode == "ignore":
        return 0
    if mode == "probe-first":
        redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        status, _, _ = fetch(redirect_uri + "favicon.ico")
        if status != 404:
            print(f"fake browser: the loopback server answered {status} to a favicon request", file=sys.stderr)
            return 1
    problem = consent(url)
    if problem:
        print(f"fake browser: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
