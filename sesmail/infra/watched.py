"""What the alarms, the dashboard and the saved queries watch (pure: no pulumi import).

Generic in the value type: the Pulumi component fills it with Outputs of the real resources (so
every alarm names exactly what was deployed, and is created after it), the pure builders and
the tests with plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class Watched(Generic[V]):
    forwarder_function: V
    forwarder_log_group: V
    token_monitor_function: V
    token_monitor_log_group: V
    audit_log_group: V
    inbound_queue: V
    inbound_dlq: V
    retry_queue: V
    retry_dlq: V
    state_machine_arn: V

    def as_dict(self) -> dict[str, V]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
