"""Debian's headless Chromium, driven by Playwright: what every real-browser test shares.

Chromium comes from Debian (``apt-get install chromium``; ``scripts/test.sh`` installs it when
missing and running as root), never from ``playwright install`` (which downloads a browser
build). Without ``/usr/bin/chromium`` the tests marked :data:`needs_chromium` are skipped on a
developer's machine; with ``CI`` set they fail instead, so CI cannot pass without running them.

A test module sets ``pytestmark = needs_chromium`` and opens its tab with :func:`chromium_page`,
usually from a three-line ``page`` fixture of its own (a fixture imported from here would trip the
linter's unused-import and redefinition checks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
#: ``--headless`` comes from Playwright's ``headless=True``; the rest keep Chromium off the network
#: (only 127.0.0.1 is reachable here) and quiet.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
)
#: Generous: a loaded 2-core CI machine; the tests' own budgets are far below it.
NAVIGATION_TIMEOUT_MS = 90_000

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"needs Debian's headless Chromium at {CHROMIUM} (apt-get install -y chromium); CI always runs these",
)


@contextlib.contextmanager
def chromium_page(profile: Path) -> Iterator[Page]:
    """A fresh Chromium (its own user-data-dir, ``profile``) with one tab; without the browser, a failure.

    Only reached where :data:`needs_chromium` did not skip, i.e. with the browser or in CI.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: CI must `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
