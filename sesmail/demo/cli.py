"""Options, the local world's set-up and tear-down, and the exit code of ``python -m sesmail.demo``.

Nothing leaves this machine: AWS is moto in this process, Google a fake on 127.0.0.1, and every
AWS variable of the caller's environment is replaced by moto's for the run (so no real account is
ever reached, whatever credentials the shell holds). The handlers' own log lines are captured,
not shown: they are what the secrets count reads. Exit code 0 when every message reached its
mailbox once and no secret was seen, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from sesmail.demo import report
from sesmail.demo.console import Narrator
from sesmail.demo.story import FULL, QUICK, DemoFailed, Event, Story, demo_config
from sesmail.local.edges import E2EFakeGoogle
from sesmail.local.moto_server import InProcessMotoServer, isolated_aws_environment
from sesmail.local.patches import Patches
from sesmail.local.world import System, quiet, start_system

EXIT_OK, EXIT_FAILED = 0, 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sesmail.demo",
        description="One week of ses-mail on this machine, with no AWS account and no network: the real Pulumi "
        "program in a local AWS (moto), a fake Google, two mailboxes, a token that dies, an alarm, a renewal "
        "from a phone, and the backlog landing in Gmail.",
    )
    parser.add_argument("--quick", action="store_true", help="one message per mailbox a day (CI runs this)")
    parser.add_argument("--report", metavar="FILE.html", type=Path, help="also write the story as an HTML page")
    parser.add_argument("--no-color", action="store_true", help="plain text (also when NO_COLOR is set)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    narrator = Narrator(sys.stdout, color=not (args.no_color or os.environ.get("NO_COLOR")))
    told: list[Event] = []

    def tell(event: Event) -> None:
        told.append(event)
        narrator.tell(event)

    narrator.heading("ses-mail: one week, locally (simulated time on the left)")
    captured = io.StringIO()
    try:
        with _local_world(captured) as world:
            story = Story(world, tell, QUICK if args.quick else FULL, handler_output=captured.getvalue)
            summary = story.run()
    except DemoFailed as exc:
        narrator.note(f"error: {exc}")
        return EXIT_FAILED
    narrator.summary(summary)
    if args.report:
        report.write(args.report, told, summary)
        narrator.note(f"Report: {args.report}")
    return EXIT_OK if summary.ok else EXIT_FAILED


@contextlib.contextmanager
def _local_world(captured: io.StringIO) -> Iterator[System]:
    """Moto and the fake Google up, the program deployed, the caller's AWS settings out of reach;
    everything undone and removed afterwards."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sesmail-demo-")))
        patches = stack.enter_context(Patches())
        isolated_aws_environment(patches)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", DeprecationWarning)  # pulumi_aws's own deprecated classes
        stack.enter_context(quiet())
        server = InProcessMotoServer()
        stack.callback(server.stop)
        google = E2EFakeGoogle()
        stack.enter_context(google)
        stack.enter_context(server.session())
        stack.enter_context(contextlib.redirect_stdout(captured))
        stack.enter_context(contextlib.redirect_stderr(captured))
        yield start_system(server, google, patches, workdir, demo_config())
