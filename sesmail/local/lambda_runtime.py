"""A Lambda runtime in this process for the functions the program deployed into moto.

With ``lambda.use_docker`` off, moto answers every ``Invoke`` (from a test or the demo through its API, or
from the Step Functions interpreter's ``lambda:invoke`` task) with ``LambdaSimpleBackend.invoke``.
:meth:`LambdaRuntime.install` replaces that method, so an invocation runs the deployed function's
handler here instead, the way Lambda would:

* the handler module is loaded from the function's **deployed archive** (moto holds the zip the
  program built), and everything else it imports must be in that archive too (checked);
* one module instance per container: a container serves one invocation at a time, is reused
  while warm, and a new one starts (cold) when all are busy, so warm state such as the
  forwarder's cached access token behaves as in Lambda, concurrency included;
* the environment is the function's deployed ``Environment.Variables`` (see
  :meth:`LambdaRuntime.export_environment`), the context has the deployed timeout;
* an unhandled exception becomes a function error (``X-Amz-Function-Error: Unhandled`` and
  ``{"errorType": <class name>, ...}``), which is what Step Functions' Retry/Catch match on.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from moto.awslambda_simple.models import LambdaSimpleBackend

from sesmail.infra.archive import REPO_ROOT, included_in, program_of
from sesmail.local.patches import Patcher


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    cold: bool = False


@dataclass
class _Function:
    """One deployed function as the runtime knows it."""

    name: str
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, str]
    code_dir: Path
    idle: list[ModuleType] = field(default_factory=list)


class LambdaRuntime:
    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir
        self._lock = threading.Lock()
        self._functions: dict[str, _Function] = {}
        self._containers = itertools.count(1)
        self.invocations: list[Invocation] = []
        self.cold_starts: Counter[str] = Counter()
        self._exported: dict[str, str] = {}

    # --- wiring ---------------------------------------------------------------------------------

    def install(self, patcher: Patcher) -> None:
        runtime = self

        def invoke(
            backend: LambdaSimpleBackend,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: dict[str, str],
        ) -> bytes:
            return runtime._invoke(backend, function_name, qualifier, body, response_headers)

        patcher.setattr(LambdaSimpleBackend, "invoke", invoke)

    def export_environment(self, lambda_client: Any, patcher: Patcher) -> dict[str, str]:
        """Put every deployed function's environment variables into this process's environment.

        The handlers read ``os.environ``, which one process shares, so the functions' variables
        are merged; a variable two functions set differently could not be emulated and fails here.
        """
        merged: dict[str, tuple[str, str]] = {}
        for function in lambda_client.list_functions()["Functions"]:
            for key, value in (function.get("Environment") or {}).get("Variables", {}).items():
                if key in merged and merged[key][1] != value:
                    raise AssertionError(
                        f"{function['FunctionName']} and {merged[key][0]} set {key} differently; "
                        "the in-process runtime shares one environment"
                    )
                merged[key] = (function["FunctionName"], value)
        for key, (_, value) in merged.items():
            patcher.setenv(key, value)
        self._exported = {key: value for key, (_, value) in merged.items()}
        return dict(self._exported)

    # --- invocation ------------------------------------------------------------------------------

    def _invoke(
        self, backend: LambdaSimpleBackend, function_name: str, qualifier: str | None, body: Any, response_headers: Any
    ) -> bytes:
        function = self._function(backend, function_name, qualifier)
        event = json.loads(body or "{}") if isinstance(body, (str, bytes)) else body
        module, cold = self._acquire(function)
        record = Invocation(function.name, event, cold=cold)
        context = _Context(function)
        try:
            handler = getattr(module, function.handler.rpartition(".")[2])
            record.result = handler(event, context)
            payload = json.dumps(record.result).encode()
        except Exception as exc:
            record.error_type, record.error_message = type(exc).__name__, str(exc)
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = json.dumps(
                {
                    "errorType": record.error_type,
                    "errorMessage": record.error_message,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }
            ).encode()
        finally:
            self._release(function, module)
            with self._lock:
                self.invocations.append(record)
        return payload

    def _function(self, backend: LambdaSimpleBackend, function_name: str, qualifier: str | None) -> _Function:
        deployed = backend.get_function(function_name, qualifier)
        with self._lock:
            known = self._functions.get(deployed.function_name)
            if known is None:
                known = self._functions[deployed.function_name] = self._load(deployed)
        missing = {k: v for k, v in known.environment.items() if self._exported.get(k) != v}
        if missing:
            raise AssertionError(f"{known.name}'s environment was not exported to the runtime: {sorted(missing)}")
        return known

    def _load(self, deployed: Any) -> _Function:
        """Unpack the deployed archive; the shared library must be the very code this process imports."""
        code_dir = self._work_dir / deployed.function_name
        with zipfile.ZipFile(io.BytesIO(deployed.code_bytes)) as archive:
            archive.extractall(code_dir)
            shipped = set(archive.namelist())
        for name in shipped:
            if (code_dir / name).read_bytes() != (REPO_ROOT / name).read_bytes():
                raise AssertionError(f"{deployed.function_name}'s archive has a stale {name}")
        return _Function(
            name=deployed.function_name,
            handler=deployed.handler,
            timeout=int(deployed.timeout),
            memory_mb=int(deployed.memory_size),
            environment=dict(deployed.environment_vars or {}),
            code_dir=code_dir,
        )

    def _acquire(self, function: _Function) -> tuple[ModuleType, bool]:
        with self._lock:
            if function.idle:
                return function.idle.pop(), False
            number = next(self._containers)
            self.cold_starts[function.name] += 1
        return self._cold_start(function, number), True

    def _release(self, function: _Function, module: ModuleType) -> None:
        with self._lock:
            function.idle.append(module)

    def _cold_start(self, function: _Function, number: int) -> ModuleType:
        """A fresh instance of the handler module from the deployed archive (its globals are the container's)."""
        module_name = function.handler.rpartition(".")[0]
        path = function.code_dir / (module_name.replace(".", "/") + ".py")
        if not path.is_file():
            raise AssertionError(f"{function.name}: the deployed archive has no {module_name} ({function.handler})")
        spec = importlib.util.spec_from_file_location(f"_lambda_container_{number}_{module_name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        shipped_here = included_in(program_of(function.handler))
        for loaded in list(sys.modules.values()):
            source = getattr(loaded, "__file__", None) or ""
            if source.startswith(str(REPO_ROOT / "sesmail")):
                relative = Path(source).relative_to(REPO_ROOT).as_posix()
                if not any(PurePosixPath(relative).is_relative_to(shipped) for shipped in shipped_here):
                    # This process imported the Pulumi components, the refresh CLI or the
                    # renewal page, none shipped in this function's archive;
                    # tests/test_lambda_runtime.py imports each handler from its archive alone, in a
                    # fresh interpreter, so a handler importing one fails there.
                    continue
                if not (function.code_dir / relative).is_file():
                    raise AssertionError(f"{function.name} imports {relative}, which its archive lacks")
        return module

    # --- what tests and the demo read ------------------------------------------------------------------

    def invocations_of(self, function: str) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.function == function]


class _Context:
    """The Lambda context object's documented attributes."""

    def __init__(self, function: _Function) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = str(function.memory_mb)
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
