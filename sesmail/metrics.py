"""CloudWatch Embedded Metric Format: counts published through the log line, no API call."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping

from sesmail import names


def emf_document(env: str, counts: Mapping[str, float], *, unit: str = "Count") -> dict[str, object]:
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": names.metric_namespace(env),
                    "Dimensions": [[]],
                    "Metrics": [{"Name": name, "Unit": unit} for name in counts],
                }
            ],
        },
        **counts,
    }


def emit_counts(env: str, counts: Mapping[str, float]) -> None:
    """Print one EMF line; CloudWatch Logs turns it into metrics in ``SESMail/{env}``."""
    if counts:
        sys.stdout.write(json.dumps(emf_document(env, counts)) + "\n")
