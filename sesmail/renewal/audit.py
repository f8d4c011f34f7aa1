"""Audit records of token renewals in the stack's audit log group (who, when, which version; never the token).

One JSON object per renewal, in a log stream per UTC day, so CloudWatch Logs Insights can answer
"who renewed the Gmail token of prod, and when" without reading a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sesmail import names


class AuditLogGroupMissing(Exception):
    """The audit log group does not exist (the stack was deployed before it was added, or not at all)."""


def write_audit_record(logs: Any, env: str, record: Mapping[str, Any], *, now: datetime | None = None) -> str:
    """Append ``record`` to ``names.audit_log_group(env)``; returns the log stream written to."""
    when = now or datetime.now(UTC)
    group = names.audit_log_group(env)
    stream = names.audit_log_stream(when.strftime("%Y-%m-%d"))
    _ensure_stream(logs, group, stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(when.timestamp() * 1000), "message": json.dumps(dict(record), sort_keys=True)}],
    )
    return stream


def _ensure_stream(logs: Any, group: str, stream: str) -> None:
    """Create the day's stream unless an earlier renewal that day did."""
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    except logs.exceptions.ResourceNotFoundException:
        raise AuditLogGroupMissing(group) from None
