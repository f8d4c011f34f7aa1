"""`python -m sesmail.refresh --env test`, run as an operator runs it, against moto's server and the fake Google."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import socket
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sesmail import names
from sesmail.local.fake_browser import consent
from sesmail.local.google import GMAIL_INSERT_SCOPE, GMAIL_LABELS_SCOPE
from tests.refresh.harness import (
    ACCOUNT,
    CALLER_ARN,
    CLI,
    ENV,
    FAILING_PROCESSOR,
    Cli,
    Cloud,
    RefreshFakeGoogle,
    install_retry_processor,
    reporting_processor,
)

TOKEN = names.refresh_token_parameter(ENV)
EXPIRY = names.refresh_token_expiry_parameter(ENV)
CLIENT = names.client_credentials_parameter(ENV)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _stored_lifetime(cloud: Cloud) -> timedelta:
    stored = cloud.parameter_json(TOKEN)
    return _when(stored["expires_at"]) - _when(stored["created_at"])


def test_happy_path_stores_proves_publishes_audits_and_starts_the_retry_processor(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    before = deployed.versions()

    result = cli.run()

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # Both parameters written, with DESIGN.md's shapes; the client JSON left alone.
    token_parameter = deployed.parameter(TOKEN)
    assert token_parameter["Type"] == "SecureString"
    assert token_parameter["Version"] == before[TOKEN] + 1
    stored = json.loads(token_parameter["Value"])
    assert set(stored) == {"token", "created_at", "expires_at", "scopes", "client_id"}
    assert stored["token"] in google.issued_refresh_tokens()
    assert stored["client_id"] == google.client_id  # the installed client that obtained it (DESIGN.md)
    assert stored["scopes"] == list(names.CONSENT_SCOPES)  # gmail.insert and gmail.labels
    assert _stored_lifetime(deployed) == timedelta(days=names.TESTING_TOKEN_LIFETIME_DAYS)
    expiry_parameter = deployed.parameter(EXPIRY)
    assert expiry_parameter["Type"] == "String"
    expiry = json.loads(expiry_parameter["Value"])
    assert expiry == {
        "created_at": stored["created_at"],
        "expires_at": stored["expires_at"],
        "expires_at_epoch": int(_when(stored["expires_at"]).timestamp()),
    }
    assert deployed.versions()[CLIENT] == before[CLIENT]
    # The token was proven: one code exchange, then one refresh-token grant with the new token.
    grants = [(r["grant_type"], r.get("refresh_token")) for r in google.token_requests]
    assert grants == [("authorization_code", None), ("refresh_token", stored["token"])]
    # The alarm clears at once.
    assert deployed.token_hours() == [pytest.approx(7 * 24, abs=0.1)]
    # Audit record: who, when, which version; never the token.
    (record,) = deployed.audit_records()
    assert record["action"] == names.AUDIT_ACTION_TOKEN_RENEWED
    assert record["who"] == CALLER_ARN
    assert record["when"] == stored["created_at"]
    assert (record["parameter"], record["version"]) == (TOKEN, token_parameter["Version"])
    assert record["expires_at"] == stored["expires_at"]
    assert {k: record[k] for k in ("account", "env", "mailbox", "source", "tool", "client_id")} == {
        "account": ACCOUNT,
        "env": ENV,
        "mailbox": names.DEFAULT_MAILBOX,
        "source": "refresh-cli",
        "tool": "python -m sesmail.refresh",
        "client_id": google.client_id,
    }
    assert record["google_account"] == google.consent_account
    assert record["parameters"] == [
        {"name": TOKEN, "version": token_parameter["Version"]},
        {"name": EXPIRY, "version": expiry_parameter["Version"]},
    ]
    assert "Google sent no lifetime" in record["lifetime_source"]
    assert stored["token"] not in deployed.audit_raw()
    # The retry processor runs under its derived ARN.
    (execution,) = deployed.executions()
    assert execution["status"] in ("RUNNING", "SUCCEEDED")
    assert execution["executionArn"] in result.stdout
    assert "Started the retry processor" in result.stdout


def test_the_consent_request_is_offline_with_consent_prompt_pkce_s256_and_a_loopback_redirect(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    result = cli.run()

    assert result.returncode == 0, result.stderr
    (request,) = google.consent_requests
    # gmail.insert and gmail.labels, plus openid and the e-mail scope: the id token names the account.
    assert (
        request["scope"]
        == f"{GMAIL_INSERT_SCOPE} {GMAIL_LABELS_SCOPE} openid https://www.googleapis.com/auth/userinfo.email"
    )
    assert request["access_type"] == "offline"
    assert request["prompt"] == "consent"
    assert request["state"]
    assert urlsplit(request["redirect_uri"]).hostname == names.OAUTH_LOOPBACK_HOST
    assert request["code_challenge_method"] == "S256"
    exchange = google.token_requests[0]
    verifier = exchange["code_verifier"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == request["code_challenge"]
    assert exchange["redirect_uri"] == request["redirect_uri"]
    # The browser got exactly the URL the CLI printed.
    (url,) = cli.browser_urls()
    assert url in result.stdout
    assert parse_qs(urlsplit(url).query)["client_id"] == [google.client_id]


def test_expiry_comes_from_google_when_it_sends_refresh_token_expires_in(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    google.refresh_token_expires_in = 3 * 24 * 3600

    result = cli.run()

    assert result.returncode == 0, result.stderr
    assert _stored_lifetime(deployed) == timedelta(days=3)
    assert deployed.token_hours() == [pytest.approx(72, abs=0.1)]
    assert "refresh_token_expires_in" in result.stdout


def test_lifetime_days_sets_the_expiry_and_zero_means_none(deployed: Cloud, cli: Cli) -> None:
    result = cli.run("--lifetime-days", "0", "--no-retry")

    assert result.returncode == 0, result.stderr
    assert deployed.parameter_json(TOKEN)["expires_at"] is None
    assert deployed.parameter_json(EXPIRY)["expires_at_epoch"] is None
    assert deployed.token_hours() == [names.TOKEN_NO_EXPIRY_HOURS]


def test_client_secret_file_is_uploaded_with_the_token(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    deployed.put_parameter(CLIENT, names.placeholder_value(ENV))
    before = deployed.versions()
    client_file = tmp_path / "client_secret.json"
    client_file.write_text(json.dumps(google.client_json()))

    result = cli.run("--client-secret", str(client_file))

    assert result.returncode == 0, result.stderr
    after = deployed.versions()
    assert after == {name: version + 1 for name, version in before.items()}
    client = deployed.parameter(CLIENT)
    assert client["Type"] == "SecureString"
    assert json.loads(client["Value"]) == google.client_json()
    assert f"Stored {CLIENT}" in result.stdout


def test_no_retry_does_not_start_the_retry_processor(deployed: Cloud, cli: Cli) -> None:
    result = cli.run("--no-retry")

    assert result.returncode == 0, result.stderr
    assert deployed.executions() == []
    assert "--no-retry" in result.stdout
    assert deployed.audit_records()  # everything else still happens


def test_no_browser_prints_the_url_and_the_loopback_listens_on_127_0_0_1_only(deployed: Cloud, cli: Cli) -> None:
    live = cli.start("--no-browser", "--no-retry")
    url = live.wait_for(lambda line: line.strip().startswith("http")).strip()
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert _listening_addresses(urlsplit(redirect).port) in ([], ["127.0.0.1"])

    problem = consent(url)  # the operator pastes the URL into a browser

    assert problem is None
    result = live.finish()
    assert result.returncode == 0, result.stderr
    assert cli.browser_urls() == []  # BROWSER was never run
    assert "ssh -L" in result.stdout


def _listening_addresses(port: int | None) -> list[str]:
    """IPv4 addresses with a listening TCP socket on ``port`` (Linux /proc; [] elsewhere)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_wait_follows_the_execution_and_shows_progress(deployed: Cloud, cli: Cli) -> None:
    install_retry_processor(deployed, reporting_processor(delivered=3, failed=0))
    queue_url = deployed.retry_queue_url()
    for n in range(3):
        deployed.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"parked": n}))

    live = cli.start("--wait")
    first = live.wait_for(lambda line: "RUNNING:" in line)
    assert "3 message(s) left in the retry queue, 0 delivered so far" in first
    deployed.sqs.purge_queue(QueueUrl=queue_url)  # the processor delivers them
    last = live.wait_for(lambda line: "SUCCEEDED:" in line)
    result = live.finish()

    assert "0 message(s) left in the retry queue, 3 delivered so far" in last
    assert result.returncode == 0, result.stderr
    assert "The retry processor finished: 3 from the retry queue, 0 moved to the retry DLQ." in result.stdout
    (execution,) = deployed.executions()
    assert execution["status"] == "SUCCEEDED"


def test_wait_exits_1_when_the_execution_fails(deployed: Cloud, cli: Cli) -> None:
    install_retry_processor(deployed, FAILING_PROCESSOR)

    result = cli.run("--wait")

    assert result.returncode == 1
    (error,) = result.error_lines
    assert "the retry processor ended FAILED" in error
    assert "TokenExpiredError: Gmail rejected a freshly minted access token" in error
    assert "aws stepfunctions start-execution" in error
    assert "Traceback" not in result.stderr
    assert "FAILED:" in result.stdout  # the last progress line


def test_help_lists_the_options_and_exits_0(cli: Cli) -> None:
    result = cli.run_argv([*CLI, "--help"])

    assert result.returncode == 0
    for option in ("--env", "--client-secret FILE", "--no-browser", "--port", "--no-retry", "--wait", "--region"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--env", "Not_Valid"],
        ["--env", ENV, "--port", "http"],
        ["--env", ENV, "--port", "70000"],
        ["--env", ENV, "--wait", "--no-retry"],
        ["--env", ENV, "--lifetime-days", "-1"],
        ["--env", ENV, "--unknown"],
    ],
    ids=["no-env", "bad-env", "bad-port", "port-out-of-range", "wait-and-no-retry", "negative-days", "unknown"],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli.run_argv([*CLI, *args])

    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_while_waiting_for_consent_exits_130_and_stores_nothing(deployed: Cloud, cli: Cli) -> None:
    before = deployed.versions()
    live = cli.start(env={"FAKE_BROWSER_MODE": "ignore"})
    live.wait_for(lambda line: line.startswith("Waiting up to"))

    live.process.send_signal(signal.SIGINT)
    result = live.finish()

    assert result.returncode == 130
    assert result.error_lines == ["error: interrupted; nothing was stored"]
    assert "Traceback" not in result.stderr
    assert deployed.versions() == before


def test_ctrl_c_while_following_the_execution_leaves_it_running(deployed: Cloud, cli: Cli) -> None:
    slow = {"StartAt": "Drain", "States": {"Drain": {"Type": "Wait", "Seconds": 30, "End": True}}}
    install_retry_processor(deployed, slow)
    live = cli.start("--wait")
    live.wait_for(lambda line: "RUNNING:" in line)

    live.process.send_signal(signal.SIGINT)
    result = live.finish()

    assert result.returncode == 130
    (execution,) = deployed.executions()
    assert result.error_lines == [
        f"error: stopped waiting; the retry processor keeps running: {execution['executionArn']}"
    ]


def test_a_browser_that_cannot_start_still_leaves_the_printed_url_usable(deployed: Cloud, cli: Cli) -> None:
    live = cli.start("--no-retry", env={"BROWSER": "/nonexistent/browser %s"})
    url = live.wait_for(lambda line: line.strip().startswith("http")).strip()
    live.wait_for(lambda line: line.startswith("Could not start a browser"))

    assert consent(url) is None
    result = live.finish()
    assert result.returncode == 0, result.stderr


def test_a_web_client_works_with_a_warning_about_its_redirect_uris(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    port = _free_port()
    google.web_redirect_uris.add(f"http://127.0.0.1:{port}/")  # what the warning tells the operator to register
    client_file = tmp_path / "client_secret_web.json"
    client_file.write_text(json.dumps(google.client_json("web")))

    result = cli.run("--client-secret", str(client_file), "--no-retry", "--port", port)

    assert result.returncode == 0, result.stderr
    assert "warning: this is a 'web' OAuth client" in result.stderr
    assert f"http://127.0.0.1:{port}/" in result.stderr
    assert json.loads(deployed.parameter(CLIENT)["Value"]) == google.client_json("web")
    assert deployed.parameter_json(TOKEN)["client_id"] == google.web_client_id


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_a_rerun_on_the_same_port_right_away_works(deployed: Cloud, cli: Cli) -> None:
    """The first run's callback connection sits in TIME_WAIT on that port for a minute afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])

    first = cli.run("--port", port, "--no-retry")
    second = cli.run("--port", port, "--no-retry")

    assert (first.returncode, second.returncode) == (0, 0), second.stderr


def test_requests_that_are_not_google_s_answer_are_ignored(deployed: Cloud, cli: Cli) -> None:
    result = cli.run("--no-retry", env={"FAKE_BROWSER_MODE": "probe-first"})

    assert result.returncode == 0, result.stderr
    assert len(deployed.audit_records()) == 1
