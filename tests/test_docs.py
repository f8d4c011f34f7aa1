"""The README and docs/ against the code, and against themselves.

- every alarm the program creates has a section in docs/operations.md named exactly as the alarm
  (for the stack ``test``; the per-mailbox variants by the ``default`` mailbox's name), and no
  section names an alarm that does not exist;
- every config key the program reads, and ``aws:region``, has one row in the configuration table;
- every stack output the program exports has one row in the outputs table;
- the README stays at most 15,000 bytes;
- every relative link in README.md and docs/*.md points at a file that exists, and every
  ``#anchor`` at a heading of its target (GitHub's anchors);
- docs/flow.svg is exactly what docs/render_flow.py draws from docs/flow.txt, and well-formed SVG
  that Chromium renders at a non-zero size.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from sesmail import names
from sesmail.infra import config
from sesmail.infra.alarms import alarm_specs
from sesmail.infra.watched import Watched
from tests.browser import NAVIGATION_TIMEOUT_MS, chromium_page, needs_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
README_MAX_BYTES = 15_000
ENV = "test"
#: A second mailbox: its alarms' names must reduce to the ``default`` mailbox's.
OTHER_MAILBOX = "alice"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading, outside code blocks."""
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match:
            found.append((len(match[1]), match[2]))
    return found


def heading_text(heading: str) -> str:
    """What a heading reads as: links to their text, code spans to their content."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip()


def github_anchor(heading: str) -> str:
    """GitHub's anchor: lowercase, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = heading_text(heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor of a file, with GitHub's ``-1``, ``-2`` suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for _, heading in headings(path):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        result.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return frozenset(result)


def links(path: Path) -> list[str]:
    """Every link and image target of a Markdown file, outside code blocks and code spans."""
    prose = _CODE_SPAN.sub("", "\n".join(prose_lines(path.read_text(encoding="utf-8"))))
    return _LINK.findall(prose)


def section(path: Path, title: str) -> list[str]:
    """The lines under the heading ``title`` up to the next heading of its level or above."""
    lines = list(prose_lines(path.read_text(encoding="utf-8")))
    for index, line in enumerate(lines):
        match = _HEADING.match(line)
        if match and heading_text(match[2]) == title:
            level = len(match[1])
            body = []
            for rest in lines[index + 1 :]:
                other = _HEADING.match(rest)
                if other and len(other[1]) <= level:
                    break
                body.append(rest)
            return body
    raise AssertionError(f"{path.name} has no heading {title!r}")


def first_column(lines: list[str]) -> list[str]:
    """The first cell of every row of the first table in ``lines`` (header and rule excluded), unquoted."""
    rows = []
    in_table = False
    for line in lines:
        if line.startswith("|"):
            in_table = True
            rows.append(line)
        elif in_table:
            break
    assert len(rows) > 2, "no table"
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rows[1].replace(" ", "")), rows[1]
    return [row.split("|")[1].strip().strip("`") for row in rows[2:]]


# --- alarms, config keys and outputs against the code -------------------------------------------


def watched() -> Watched[str]:
    return Watched(**{name: f"watched-{name}" for name in Watched.field_names()})


def alarm_names(mailboxes: tuple[str, ...]) -> list[str]:
    return [spec.name for spec in alarm_specs(ENV, watched(), mailboxes, canary=True)]


def test_per_mailbox_alarm_names_reduce_to_the_default_mailbox_s() -> None:
    reduced = {re.sub(rf"-{OTHER_MAILBOX}-{ENV}$", f"-{ENV}", n) for n in alarm_names(("default", OTHER_MAILBOX))}
    assert reduced == set(alarm_names((names.DEFAULT_MAILBOX,)))
    assert names.canary_alarm(ENV) in reduced
    assert names.undelivered_found_alarm(ENV) in reduced


def test_every_alarm_has_its_section_in_operations_named_exactly_as_the_alarm() -> None:
    expected = set(alarm_names((names.DEFAULT_MAILBOX,)))
    raw = [text for level, text in headings(OPERATIONS) if level == 3 and heading_text(text).startswith(names.PROJECT)]
    assert [t for t in raw if "`" in t] == [], "alarm headings are the bare name, without backticks"
    sections = [heading_text(text) for text in raw]
    assert len(sections) == len(set(sections)), "an alarm has two sections"
    assert sorted(expected - set(sections)) == [], "alarms without a section in docs/operations.md"
    assert sorted(set(sections) - expected) == [], "sections for alarms the program does not create"
    # Each section is a runbook: when it fires, what it means, what to do.
    for name in expected:
        body = "\n".join(section(OPERATIONS, name))
        for part in ("When it fires", "What it means", "What to do"):
            assert f"**{part}:**" in body, f"{name}: no '{part}'"


def test_the_configuration_table_has_one_row_per_key_the_program_reads() -> None:
    rows = first_column(section(OPERATIONS, "Stack configuration"))
    assert len(rows) == len(set(rows)), rows
    assert set(rows) == {f"{config.NAMESPACE}:{key}" for key in config.KEYS} | {"aws:region"}


def test_the_outputs_table_has_one_row_per_exported_output() -> None:
    from tests.infra.harness import run_program

    rows = first_column(section(OPERATIONS, "Stack outputs"))
    assert len(rows) == len(set(rows)), rows
    assert set(rows) == set(run_program().outputs)


# --- the README and the links ---------------------------------------------------------------------


def test_the_readme_is_at_most_15000_bytes() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor in {destination.name}")
    assert broken == [], f"{path.relative_to(REPO_ROOT)}: {broken}"


def test_the_anchor_rules_are_github_s() -> None:
    assert github_anchor("First deployment, in this order") == "first-deployment-in-this-order"
    assert github_anchor("`pulumi up`") == "pulumi-up"
    assert github_anchor("Reconciling on demand: `--reconcile`") == "reconciling-on-demand---reconcile"
    assert github_anchor("The operator's permissions") == "the-operators-permissions"
    assert github_anchor("ses-mail-canary-missing-test") == "ses-mail-canary-missing-test"


# --- the flow picture -------------------------------------------------------------------------------


@cache
def render_flow() -> ModuleType:
    """``docs/render_flow.py``, a script rather than a package module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("docs_render_flow", DOCS / "render_flow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_the_flow_picture_is_what_its_source_renders() -> None:
    rendered = render_flow().render((DOCS / "flow.txt").read_text(encoding="utf-8"))
    assert (DOCS / "flow.svg").read_text(encoding="utf-8") == rendered, (
        "docs/flow.svg differs from docs/flow.txt: run `python docs/render_flow.py` and commit both"
    )


def test_the_flow_picture_is_well_formed_svg_with_every_node_of_its_source() -> None:
    module = render_flow()
    root = ElementTree.fromstring((DOCS / "flow.svg").read_text(encoding="utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert float(root.attrib["width"]) > 0 and float(root.attrib["height"]) > 0
    flow = module.parse((DOCS / "flow.txt").read_text(encoding="utf-8"))
    boxes = root.findall("{http://www.w3.org/2000/svg}rect[@rx='8']")
    assert len(boxes) == len(flow.nodes)
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for node in flow.nodes.values():
        assert all(line in text for line in node.lines), node.name


def test_the_renderer_refuses_a_line_that_is_not_an_edge() -> None:
    module = render_flow()
    with pytest.raises(module.FlowError, match="line 2"):
        module.render("a -> b\nnot an edge\n")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "chromium-profile") as tab:
        yield tab


@needs_chromium
def test_chromium_renders_the_flow_picture_at_a_non_zero_size(page: Page) -> None:
    page.goto((DOCS / "flow.svg").as_uri(), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    size = page.evaluate(
        "() => { const box = document.documentElement.getBoundingClientRect(); return [box.width, box.height]; }"
    )
    assert size[0] > 0 and size[1] > 0, size
    empty = page.evaluate(
        "() => [...document.querySelectorAll('text')].filter(t => t.getBBox().width === 0).map(t => t.textContent)"
    )
    assert empty == [], f"labels Chromium drew with no width: {empty}"
