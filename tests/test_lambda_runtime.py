"""The Lambda code path imports with only what the AWS Lambda Python runtime ships.

Each archive (``sesmail.infra.archive.PROGRAMS``: the runtime, and the renewal page's) is copied
to a scratch directory and every handler in it imported by a fresh interpreter whose path holds
nothing but that copy and boto3 with its own dependencies, exactly like the Lambda runtime: no
pulumi, no requests, no google-auth.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sesmail.infra.archive import PROGRAMS, RENEWAL, lambda_source_files

# boto3 and what it depends on: the Lambda Python runtime ships exactly these.
RUNTIME_PACKAGES = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six")

PROBE = """
import importlib, pathlib, sys
handlers = sorted(p.stem for p in pathlib.Path("task/handlers").glob("*.py") if p.stem != "__init__")
for name in handlers:
    assert callable(importlib.import_module(f"handlers.{name}").handler), name
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in {"pulumi", "pulumi_aws", "requests", "google", "moto"})
assert not forbidden, forbidden
assert not any(m.startswith("sesmail.infra") for m in sys.modules)
print("imported", *handlers)
"""


def _copy_runtime_packages(site: Path) -> None:
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, site / origin.name)


@pytest.mark.parametrize("program", PROGRAMS)
def test_lambda_code_imports_with_only_the_runtime_packages(tmp_path: Path, program: str) -> None:
    code, site = tmp_path / "task", tmp_path / "runtime"
    site.mkdir()
    for archive_path, source in lambda_source_files(program=program):  # the very files shipped
        target = code / archive_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    _copy_runtime_packages(site)

    # -I -S: no site-packages, no PYTHONPATH; the path is exactly the archive plus the runtime's boto3.
    bootstrap = f"import sys; sys.path[:0] = [{str(code)!r}, {str(site)!r}]\n"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", bootstrap + PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "imported" in result.stdout and "forwarder" in result.stdout
    assert ("renewal" in result.stdout.split()) == (program == RENEWAL)
    assert not (code / "sesmail" / "infra").exists()
