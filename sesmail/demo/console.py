"""The story on a terminal: one line per event as it happens (simulated time first), then the count."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.table import Table

from sesmail.demo.story import Event, Summary

TONES = {"info": "default", "good": "green", "warn": "yellow", "bad": "red"}


class Narrator:
    """Writes to ``stream`` (the real terminal: the handlers' own output is captured elsewhere)."""

    def __init__(self, stream: TextIO, *, color: bool = True) -> None:
        # Not a terminal (a pipe, CI's log): wide enough for the summary's rows to stay one line each.
        width = None if stream.isatty() else 120
        self.console = Console(file=stream, no_color=not color, highlight=False, soft_wrap=True, width=width)

    def heading(self, text: str) -> None:
        self.console.rule(f"[bold]{text}")

    def tell(self, event: Event) -> None:
        style = TONES.get(event.tone, "default")
        self.console.print(
            f"[dim]{event.at:%a %d %b %H:%M}[/dim]  [bold]{event.actor:<15}[/bold] [{style}]{event.text}[/{style}]",
            markup=True,
        )

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    def summary(self, summary: Summary) -> None:
        table = Table(title="One week, counted", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("count")
        for label, value in summary.rows():
            table.add_row(label, value)
        self.console.print(table)
        verdict = (
            "[green]Every message reached its mailbox once, in Date order; no secret was seen.[/green]"
            if summary.ok
            else "[red]Something went wrong: see the counts above.[/red]"
        )
        self.console.print(verdict, markup=True)
