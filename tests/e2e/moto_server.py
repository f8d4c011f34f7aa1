"""moto's server inside the test process, so the whole system shares one AWS.

In the test process, not a child process (as tests/refresh does), because two things need
moto's *objects* and not only its HTTP API:

* the Step Functions interpreter's ``lambda:invoke`` ends in ``LambdaSimpleBackend.invoke``,
  which :mod:`tests.e2e.lambda_runtime` replaces to run the real handler modules here;
* the handlers running here reach moto through the same server, over HTTP, like Lambda does.

The refresh CLI (a subprocess) reaches it through ``AWS_ENDPOINT_URL``. moto's backends and its
user config are module globals shared with the in-process ``mock_aws`` tests of other suites, so
:meth:`InProcessMotoServer.session` refuses to start while a ``mock_aws`` is active, and every
change to the config is undone when the test ends. Under ``pytest -n`` each worker process has its
own server on its own ephemeral port.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

from moto.core.models import botocore_stubber
from moto.server import ThreadedMotoServer

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
        """An empty AWS with :data:`E2E_CONFIG` for one test; moto's previous config afterwards.

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
