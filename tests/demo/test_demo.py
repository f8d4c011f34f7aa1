"""``python -m sesmail.demo --quick``, run as a newcomer runs it, checks its own summary; its report opens in Chromium.

The demo is one subprocess for the module (about a minute): it must exit 0, tell the week line by
line, end with a summary that says every message arrived once and no secret was seen, and write
its HTML report. The report is then opened from disk in Debian's headless Chromium, screenshotted,
and its DOM read back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sesmail.demo import report
from sesmail.demo.story import Event, Summary
from tests.browser import NAVIGATION_TIMEOUT_MS, chromium_page, needs_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SECONDS = 600
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    report: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The quick demo, exactly as the README says to run it (from the repository root)."""
    report_path = tmp_path_factory.mktemp("demo") / "week.html"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment["AWS_PROFILE"] = "a-real-profile-the-demo-must-never-use"
    result = subprocess.run(
        [sys.executable, "-m", "sesmail.demo", "--quick", "--no-color", "--report", str(report_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
    )
    return DemoRun(result.returncode, result.stdout, result.stderr, report_path)


def _row(stdout: str, label: str) -> str:
    match = re.search(rf"{re.escape(label)}\s*│\s*(.+?)\s*│", stdout)
    assert match, f"no summary row {label!r} in:\n{stdout}"
    return match.group(1)


@pytest.mark.slow
def test_the_quick_demo_tells_the_week_and_its_summary_holds(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    story = [line for line in lines if re.match(r"\w{3} \d{2} \w{3} \d{2}:\d{2}  ", line)]
    assert len(story) >= 20, demo.stdout  # one line per event, each with its simulated time
    told = "\n".join(story)
    for step in (
        "pulumi up",
        "--mailbox alice: consent as alice",
        "ALARM ses-mail-gmail-forwarder-token-expiring-alice-test",
        "alice's token reached the 7-day limit",
        "ALARM ses-mail-gmail-forwarder-token-expired-alice-test",
        "Or renew from a phone: https://",
        "alice's phone",
        "retry processor SUCCEEDED: 2 delivered",
    ):
        assert step in told, step
    # The summary: what arrived, arrived once; nothing dead-lettered; no secret anywhere.
    received, imported = _row(demo.stdout, "messages received"), _row(demo.stdout, "imported into Gmail")
    assert received == imported == "18 (alice 9, bob 9)"
    assert _row(demo.stdout, "imported twice / missing / out of Date order") == "0 / 0 / 0"
    assert _row(demo.stdout, "parked while a token was dead") == "2"
    assert _row(demo.stdout, "dead-lettered") == "0"
    assert _row(demo.stdout, "secrets seen in any output") == "0"
    assert "Every message reached its mailbox once" in demo.stdout
    # The handlers' log lines are counted, not shown; the terminal holds the story only.
    assert '"logger": "sesmail' not in demo.stdout and '"logger": "sesmail' not in demo.stderr


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "chromium-profile") as tab:
        yield tab


@pytest.mark.slow
@needs_chromium
def test_the_report_renders_its_timeline_and_table_in_chromium(demo: DemoRun, page: Page, tmp_path: Path) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    page.goto(demo.report.as_uri(), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    shot = tmp_path / "demo-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000
    rows = page.eval_on_selector_all(
        "table#summary tr", "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].innerText])"
    )
    assert dict(rows)["secrets seen in any output"] == "0"
    assert dict(rows)["imported into Gmail"] == "18 (alice 9, bob 9)"
    assert page.locator("ol.timeline li").count() >= 20
    assert page.locator("p.verdict.ok").count() == 1
    assert page.locator("script").count() == 0  # self-contained: no script, nothing fetched


# --- the pieces -----------------------------------------------------------------------------------------


def _summary(**changes: object) -> Summary:
    fields: dict[str, object] = {
        "received": {"alice": 2},
        "imported": {"alice": 2},
        "duplicates": 0,
        "missing": 0,
        "out_of_order": 0,
        "parked": 1,
        "dead_lettered": 0,
        "alarms_fired": ("a",),
        "secrets_seen": 0,
    }
    fields.update(changes)
    return Summary(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [{"imported": {"alice": 1}}, {"duplicates": 1}, {"missing": 1}, {"dead_lettered": 1}, {"secrets_seen": 1}],
)
def test_the_summary_is_ok_only_when_everything_arrived_once_and_nothing_leaked(changes: dict[str, object]) -> None:
    assert _summary().ok
    assert not _summary(**changes).ok


def test_the_report_escapes_what_it_shows() -> None:
    event = Event(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "<script>", "a & b <b>", "good")
    html = report.render([event], _summary())
    assert "<script>" not in html.split("<body>")[1]
    assert "&lt;script&gt;" in html and "a &amp; b &lt;b&gt;" in html
    assert 'class="verdict ok"' in html and 'href="http' not in html and "src=" not in html
