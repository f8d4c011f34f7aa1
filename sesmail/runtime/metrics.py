"""CloudWatch Embedded Metric Format: counts published through the log line, no API call."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping

from sesmail import names


def emf_document(
    env: str, counts: Mapping[str, float], *, unit: str = "Count", dimensions: Mapping[str, str] | None = None
) -> dict[str, object]:
    """One EMF object; ``dimensions`` (e.g. ``{"Mailbox": "alice"}``) apply to every metric in it."""
    dimensions = dict(dimensions or {})
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": names.metric_namespace(env),
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name in counts],
                }
            ],
        },
        **dimensions,
        **counts,
    }


def emit_counts(
    env: str, counts: Mapping[str, float], *, unit: str = "Count", dimensions: Mapping[str, str] | None = None
) -> None:
    """Print one EMF line; CloudWatch Logs turns it into metrics in ``SESMail/{env}``.

    Never raises: the forwarder calls this after the batch is settled, and a metric that cannot
    be written (stdout closed or broken, a bad value) must not turn delivered mail into a failed
    invocation that SQS would redeliver. The loss is reported on stderr, best effort.
    """
    if not counts:
        return
    try:
        sys.stdout.write(json.dumps(emf_document(env, counts, unit=unit, dimensions=dimensions)) + "\n")
    except Exception as exc:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"sesmail: could not emit metrics {sorted(counts)}: {type(exc).__name__}: {exc}\n")
