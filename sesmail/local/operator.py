"""The operator at a terminal: the refresh CLI run as a subprocess, with a scripted browser.

The CLI runs exactly as an operator runs it (``python -m sesmail.refresh``), with AWS reached
through ``AWS_ENDPOINT_URL`` (a moto server on 127.0.0.1), Google through the client JSON's
``auth_uri``/``token_uri`` (the fake on 127.0.0.1), and the browser through ``BROWSER``
(:mod:`sesmail.local.fake_browser`, which clicks "Allow"). Every run's output is kept, so a
caller can check at the end that no token or client secret ever reached it. The refresh CLI
tests and the end-to-end world (tests/e2e, ``python -m sesmail.demo``) both drive it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from sesmail import names
from sesmail.local.account import REGION, STACK
from sesmail.local.google import FakeGoogle

ENV = STACK
REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSER_SCRIPT = Path(__file__).resolve().with_name("fake_browser.py")
CLI = (sys.executable, "-m", "sesmail.refresh")
CLI_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = "0.1"


class Endpoint(Protocol):
    """Where the CLI reaches AWS: any moto server (in this process or a child's) with its URL."""

    @property
    def url(self) -> str: ...


# --- Google ------------------------------------------------------------------------------------


class RefreshFakeGoogle(FakeGoogle):
    """The shared fake plus what the operator's runs need: the issued-token list (for the
    no-secret-in-output checks) and dead tokens (the refresh CLI tests, the end-to-end world)."""

    #: Issue refresh tokens that are already revoked: the code exchange works, minting does not.
    issue_dead_tokens = False

    def issued_refresh_tokens(self) -> list[str]:
        """Every refresh token the fake ever issued (for the no-secret-in-output check)."""
        with self._lock:
            return list(self._grants)

    def _new_refresh_token(self, scope: str) -> str:
        token = super()._new_refresh_token(scope)
        if self.issue_dead_tokens:
            self._grants[token].revoked = True
        return token

    def secrets(self) -> list[str]:
        return [
            *self.issued_refresh_tokens(),
            *self.issued_access_tokens(),
            self.client_secret,
            self.web_client_secret,
        ]


# --- the CLI -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


class LiveCli:
    """A running CLI whose stdout can be watched line by line (for --no-browser, Ctrl-C, --wait)."""

    def __init__(self, process: subprocess.Popen[str], record: Callable[[CliResult], None]) -> None:
        self.process = process
        self._record = record
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._pump, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        """The first (new) stdout line matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout}s; stdout so far: {''.join(self._seen)}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the CLI ended without a matching line; stdout: {''.join(self._seen)}")
            self._seen.append(line)
            if predicate(line):
                return line

    def finish(self, timeout: float = CLI_TIMEOUT_SECONDS) -> CliResult:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(timeout=5)
        while not self._lines.empty():
            line = self._lines.get()
            if line is not None:
                self._seen.append(line)
        assert self.process.stderr is not None
        result = CliResult(self.process.returncode, "".join(self._seen), self.process.stderr.read())
        self._record(result)
        return result


class Cli:
    """Runs ``python -m sesmail.refresh --env test ...`` the way an operator would."""

    def __init__(self, moto: Endpoint, tmp_path: Path) -> None:
        self.moto = moto
        self.tmp_path = tmp_path
        self.browser_log = tmp_path / "browser.log"
        self.results: list[CliResult] = []

    def environment(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """A clean child environment: moto for AWS, the fake browser, fast polling."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SESMAIL_", "OAUTHLIB_", "BROWSER"))}
        env.update(
            AWS_ENDPOINT_URL=self.moto.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            # -P: the script's directory stays off sys.path, where this package's operator.py would
            # shadow the standard library's operator module.
            BROWSER=f"{sys.executable} -P {BROWSER_SCRIPT} %s",
            FAKE_BROWSER_LOG=str(self.browser_log),
            # The fake's token_uri is http://127.0.0.1; oauthlib insists on https otherwise.
            OAUTHLIB_INSECURE_TRANSPORT="1",
            **{names.ENV_VAR_POLL_SECONDS: POLL_SECONDS},
        )
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def command(self, args: Sequence[str]) -> list[str]:
        """An ephemeral loopback port unless the test picks one: no clashes under ``pytest -n``."""
        extra = [] if any(a.startswith("--port") for a in args) else ["--port", "0"]
        return [*CLI, "--env", ENV, *args, *extra]

    def run(self, *args: str, env: Mapping[str, str | None] | None = None) -> CliResult:
        """``--env test --port 0`` plus ``args``, to completion."""
        return self.run_argv(self.command(args), env=env)

    def run_argv(self, argv: Sequence[str], *, env: Mapping[str, str | None] | None = None) -> CliResult:
        """Exactly ``argv`` (for usage errors, where the defaults above would get in the way)."""
        completed = subprocess.run(
            list(argv),
            cwd=REPO_ROOT,
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
        result = CliResult(completed.returncode, completed.stdout, completed.stderr)
        self.results.append(result)
        return result

    def start(self, *args: str, env: Mapping[str, str | None] | None = None) -> LiveCli:
        process = subprocess.Popen(
            self.command(args),
            cwd=REPO_ROOT,
            env=self.environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return LiveCli(process, self.results.append)

    def browser_urls(self) -> list[str]:
        return self.browser_log.read_text().splitlines() if self.browser_log.exists() else []
