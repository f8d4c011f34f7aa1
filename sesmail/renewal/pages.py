"""Small, mobile-first HTML pages without JavaScript, and the security headers they are served with.

The renewal page (``handlers/renewal.py``) renders every answer with :func:`render`, and so does
the refresh CLI's loopback outcome page (``sesmail.cli.oauth_flow``): one look, one set of headers.

Every text is escaped; links are same-site paths or ``https`` URLs only. The one inline
``<style>`` is allowed by its hash in the Content-Security-Policy, so the policy needs neither
``'unsafe-inline'`` nor any source at all: ``default-src 'none'`` blocks scripts, images, fonts,
frames and fetches; ``form-action``, ``frame-ancestors`` and ``base-uri`` (which ``default-src``
does not cover) are ``'none'`` too.

Standard library only: it is shipped in the Lambda archive.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

TONE_GOOD = "good"
TONE_BAD = "bad"
TONE_NEUTRAL = "neutral"
_TONES = frozenset({TONE_GOOD, TONE_BAD, TONE_NEUTRAL})

#: The whole style sheet, inline (one request per page, nothing else to allow in the CSP).
STYLE = (
    "body{font:17px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:34em;margin:8vh auto;"
    "padding:0 1.2em;color:#1f2328;background:#fff}"
    "h1{font-size:1.5em;line-height:1.25;margin:0 0 .6em}"
    ".good{color:#1a7f37}.bad{color:#b42318}.neutral{color:#1f2328}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em;margin:1.2em 0}"
    "dt{color:#59636e}dd{margin:0;overflow-wrap:anywhere}"
    "a{color:#0969da}ul.links{list-style:none;padding:0;margin:1.5em 0 0}"
    "ul.links li{margin:.7em 0}ul.links a{display:inline-block;padding:.45em 0}"
    "@media (prefers-color-scheme:dark){body{color:#e6edf3;background:#0d1117}.neutral{color:#e6edf3}"
    "dt{color:#9198a1}a{color:#4493f8}.good{color:#3fb950}.bad{color:#f85149}}"
)
#: CSP source expression of :data:`STYLE` (the hash of the ``<style>`` element's exact text).
STYLE_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii") + "'"
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {STYLE_HASH}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

#: On every response, pages and redirects alike: nothing cached (a page may describe a token
#: renewal), no ``Referer`` leaves the site, nothing runs or loads but the hashed style, no framing.
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
)
HTML_CONTENT_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Link:
    """A link shown under the page's text: a same-site path (``/...``) or an ``https`` URL."""

    text: str
    href: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.href)
        same_site = self.href.startswith("/") and not self.href.startswith("//") and not parts.scheme
        if not same_site and parts.scheme != "https":
            raise ValueError("a page link must be a same-site path or an https URL")


@dataclass(frozen=True)
class Page:
    """One page; every string is plain text (escaped when rendered)."""

    title: str
    heading: str
    paragraphs: Sequence[str] = ()
    tone: str = TONE_NEUTRAL
    #: Label/value pairs shown as a definition list (mailbox, outcome, mail on its way, ...).
    facts: Sequence[tuple[str, str]] = ()
    links: Sequence[Link] = ()

    def __post_init__(self) -> None:
        if self.tone not in _TONES:
            raise ValueError(f"tone must be one of {sorted(_TONES)}")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1 class="{tone}">{heading}</h1>
{paragraphs}{facts}{links}</body>
</html>
"""


def render(page: Page) -> str:
    """The page as a small HTML document (UTF-8 text)."""
    esc = html.escape
    paragraphs = "".join(f"<p>{esc(text)}</p>\n" for text in page.paragraphs)
    facts = ""
    if page.facts:
        rows = "".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in page.facts)
        facts = f"<dl>{rows}</dl>\n"
    links = ""
    if page.links:
        items = "".join(
            f'<li><a href="{esc(link.href, quote=True)}" rel="noreferrer noopener">{esc(link.text)}</a></li>'
            for link in page.links
        )
        links = f'<ul class="links">{items}</ul>\n'
    return _TEMPLATE.format(
        title=esc(page.title),
        style=STYLE,
        tone=page.tone,
        heading=esc(page.heading),
        paragraphs=paragraphs,
        facts=facts,
        links=links,
    )


def headers(content_type: str = HTML_CONTENT_TYPE, **extra: str) -> dict[str, str]:
    """:data:`SECURITY_HEADERS` plus ``Content-Type`` and ``extra`` (``Location=...``, ``Allow=...``)."""
    return {**SECURITY_HEADERS, "Content-Type": content_type, **extra}
