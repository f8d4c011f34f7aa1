"""Tags every taggable resource carries, so cost and ownership queries find the whole stack."""

from __future__ import annotations

from sesmail import names


def resource_tags(env: str) -> dict[str, str]:
    return {"Project": names.PROJECT, "Environment": names.check_env(env)}
