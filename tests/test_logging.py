"""Structured logs: one JSON object a line, context fields bound, registered secrets masked."""

from __future__ import annotations

import json

import pytest

from sesmail.runtime.log import REDACTED, bound, get_logger, register_secret


def test_lines_are_json_with_context_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger("sesmail.test")
    register_secret("ya29.super-secret-access-token")
    with bound(env="test", requestId="r-1", messageId=None):
        log.info("minted ya29.super-secret-access-token", extra={"event": "token.minted", "messageId": "m-1"})
    [line] = capsys.readouterr().out.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["event"] == "token.minted"
    assert (entry["env"], entry["requestId"], entry["messageId"]) == ("test", "r-1", "m-1")
    assert entry["message"] == f"minted {REDACTED}"
    assert "timestamp" in entry
