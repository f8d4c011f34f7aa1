"""moto's server inside this process, so the whole system shares one AWS.

In this process (the tests', or ``python -m sesmail.demo``'s), not a child process (as
tests/refresh does), because two things need moto's *objects* and not only its HTTP API:

* the Step Functions interpreter's ``lambda:invoke`` ends in ``LambdaSimpleBackend.invoke``,
  which :mod:`sesmail.local.lambda_runtime` replaces to run the real handler modules here;
* the handlers running here reach moto through the same server, over HTTP, like Lambda does.

The refresh CLI (a subprocess) reaches it through ``AWS_ENDPOINT_URL``. moto's backends and its
user config are module globals shared with the in-process ``mock_aws`` tests of other suites, so
:meth:`InProcessMotoServer.session` refuses to start while a ``mock_aws`` is active, and every
change to the config is undone when the session ends. Under ``pytest -n`` each worker process has
its own server on its own ephemeral port.

Also here, for everything that runs moto in its process: :func:`atomic_s3_conditional_writes`
(moto's PutObject made as atomic as S3's) and :func:`isolated_aws_environment` (no real
credentials or endpoint can be found).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

from moto.core.models import botocore_stubber
from moto.server import ThreadedMotoServer

from sesmail import names
from sesmail.local.account import REGION
from sesmail.local.patches import Patcher

#: What the scenarios need from moto: Step Functions really executes, and Lambda invokes are
#: answered by the "simple" backend (no Docker), whose ``invoke`` the Lambda runtime replaces.
E2E_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


class InProcessMotoServer:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.port = port
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def _call(self, path: str, body: bytes | None = None, content_type: str = "application/json") -> bytes:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method="GET" if body is None else "POST",
            headers={"Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    def config(self) -> dict[str, Any]:
        return dict(json.loads(self._call("/moto-api/config")))

    def set_config(self, config: dict[str, Any]) -> None:
        self._call("/moto-api/config", json.dumps(config).encode())

    def reset(self) -> None:
        """Empty every backend (all services, all accounts)."""
        self._call("/moto-api/reset", b"", "text/plain")

    @contextlib.contextmanager
    def session(self) -> Iterator[InProcessMotoServer]:
        """An empty AWS with :data:`E2E_CONFIG` for one test (or demo); moto's previous config afterwards.

        ``MOTO_PORT`` tells moto's Step Functions interpreter where the server is: in server mode
        it calls SQS, Lambda and CloudWatch at ``http://localhost:{MOTO_PORT}``.
        """
        if botocore_stubber.enabled:
            raise RuntimeError("a mock_aws is active in this process; the e2e server would share its backends")
        previous_config = self.config()
        previous_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(self.port)
        self.reset()
        self.set_config(E2E_CONFIG)
        try:
            yield self
        finally:
            self.reset()
            self.set_config(previous_config)
            if previous_port is None:
                os.environ.pop("MOTO_PORT", None)
            else:
                os.environ["MOTO_PORT"] = previous_port


def isolated_aws_environment(patcher: Patcher, region: str = REGION) -> None:
    """No real credentials or endpoint can be found: moto's fake keys, no config or credentials file.

    Every ``AWS_*`` variable (and the Gmail API base URL) is removed first, so nothing of the
    operator's shell (a profile, real keys, a real endpoint) reaches the clients made afterwards.
    """
    for key in list(os.environ):
        if key.startswith("AWS_") or key == names.ENV_VAR_GMAIL_API_BASE_URL:
            patcher.delenv(key, raising=False)
    patcher.setenv("AWS_ACCESS_KEY_ID", "testing")
    patcher.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patcher.setenv("AWS_DEFAULT_REGION", region)
    patcher.setenv("AWS_CONFIG_FILE", os.devnull)
    patcher.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


_S3_PUT_LOCK = threading.Lock()


def atomic_s3_conditional_writes(patcher: Patcher) -> None:
    """Make moto's PutObject check its If-None-Match / If-Match and write in one step, as S3 does.

    moto 5.2 honours both conditions (412 PreconditionFailed; NoSuchKey for If-Match on a missing
    key) but checks and writes without a lock, so two threads can both pass the check; S3
    serialises conditional writes of a key (one wins, the other gets 412, or 409
    ConditionalRequestConflict while the first is in progress, which moto never sends: tests
    inject it). Serialising every in-process PutObject is what makes concurrent claims faithful.
    """
    from moto.s3.responses import S3Response

    original = S3Response.put_object

    def put_object(self: S3Response) -> Any:
        with _S3_PUT_LOCK:
            return original(self)

    patcher.setattr(S3Response, "put_object", put_object)
