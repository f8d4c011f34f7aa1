"""The story as one self-contained HTML page: a timeline and the table, for people who would rather look.

No script, no external resource (the style is inline), every text escaped; it opens from disk in
any browser and can be mailed as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from sesmail.demo.story import Event, Summary

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
h1{font-size:1.5rem;margin-bottom:.2rem} p.lead{color:#4b5563;margin-top:0}
ol.timeline{list-style:none;padding:0;border-left:3px solid #d0d7e2;margin-left:.5rem}
ol.timeline li{position:relative;padding:.35rem 0 .35rem 1.2rem}
ol.timeline li::before{content:"";position:absolute;left:-.55rem;top:.8rem;width:.7rem;height:.7rem;
border-radius:50%;background:#9aa7bb}
li.good::before{background:#1a7f37} li.warn::before{background:#b58100} li.bad::before{background:#c62828}
.when{color:#6b7280;font-variant-numeric:tabular-nums;margin-right:.6rem}
.actor{font-weight:600;margin-right:.4rem}
table{border-collapse:collapse;margin:1rem 0;width:100%}
td,th{border:1px solid #d0d7e2;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f5f9;width:40%}
.verdict{font-weight:600} .ok{color:#1a7f37} .notok{color:#c62828}
"""


def render(events: Sequence[Event], summary: Summary, *, title: str = "ses-mail: one week, locally") -> str:
    items = "\n".join(
        f'<li class="{escape(e.tone)}"><span class="when">{e.at:%a %d %b %H:%M}</span>'
        f'<span class="actor">{escape(e.actor)}</span>{escape(e.text)}</li>'
        for e in events
    )
    rows = "\n".join(
        f"<tr><th>{escape(label)}</th><td>{escape(value).replace(chr(10), '<br>')}</td></tr>"
        for label, value in summary.rows()
    )
    verdict = (
        '<p class="verdict ok">Every message reached its mailbox once, in Date order; no secret was seen.</p>'
        if summary.ok
        else '<p class="verdict notok">Something went wrong: see the counts.</p>'
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n"
        '<p class="lead">The real Pulumi program in a local AWS (moto) and a fake Google, played through a '
        "simulated week: <code>python -m sesmail.demo</code>.</p>\n"
        f'<h2>What happened</h2>\n<ol class="timeline">\n{items}\n</ol>\n'
        f'<h2>Counted</h2>\n<table id="summary">\n{rows}\n</table>\n{verdict}\n'
        "</body></html>\n"
    )


def write(path: Path, events: Sequence[Event], summary: Summary) -> None:
    path.write_text(render(events, summary), encoding="utf-8")
