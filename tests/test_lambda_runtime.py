"""The Lambda code path imports with only what the AWS Lambda Python runtime ships.

The handlers and ``sesmail/`` minus ``sesmail/infra/`` are copied to a scratch directory and
imported by a fresh interpreter whose path holds nothing but that copy and boto3 with its own
dependencies, exactly like the Lambda runtime: no pulumi, no requests, no google-auth.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sesmail.infra.archive import lambda_source_files

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


#: The renewal page, built but not deployed yet (``sesmail/infra/archive.py``): checked like a shipped
#: handler, so it stays importable in Lambda until its function exists.
NOT_YET_DEPLOYED = ("handlers/renewal.py", "sesmail/pages.py", "sesmail/renewal")


def _with_undeployed(root: Path) -> list[tuple[str, Path]]:
    files = list(lambda_source_files())
    for relative in NOT_YET_DEPLOYED:
        path = root / relative
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files += [(p.relative_to(root).as_posix(), p) for p in found if "__pycache__" not in p.parts]
    return files


@pytest.mark.parametrize("with_undeployed", [False, True], ids=["archive", "archive-and-renewal-page"])
def test_lambda_code_imports_with_only_the_runtime_packages(tmp_path: Path, with_undeployed: bool) -> None:
    code, site = tmp_path / "task", tmp_path / "runtime"
    site.mkdir()
    root = Path(__file__).resolve().parents[1]
    files = _with_undeployed(root) if with_undeployed else lambda_source_files()  # the very files shipped
    for archive_path, source in files:
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
    assert not (code / "sesmail" / "infra").exists()
