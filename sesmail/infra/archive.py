"""Which files make up the Lambda deployment archive (pure: no pulumi import).

An archive is defined by what it includes (:data:`INCLUDED`): the mail path's is the handlers,
``sesmail/names.py`` and ``sesmail/runtime/``, and needs nothing beyond what the Lambda Python
runtime ships. The renewal page gets its own archive: the same runtime plus ``sesmail/renewal/``,
so the mail path's archive does not grow with it.
The Pulumi program, the tests and the benchmarks all call :func:`lambda_source_files`, so they
measure and check the very same files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

#: Repository root (this file is ``<root>/sesmail/infra/archive.py``).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The archives: every function of the stack runs one of these two programs.
#: ``runtime``: the forwarder, the token monitor and the canary (and the retry processor's forwarder).
#: ``renewal``: the phone renewal page, which is the runtime plus the page's own files.
RUNTIME = "runtime"
RENEWAL = "renewal"
PROGRAMS = (RUNTIME, RENEWAL)

#: What each archive holds, by inclusion: files, or packages with everything below them. The mail
#: path is ``sesmail/runtime/`` (standard library and botocore only), ``sesmail/names.py`` and its
#: handlers; the page adds ``sesmail/renewal/`` (storing a token, the audit record and the pages,
#: which the CLI shares) and its handler. Nothing else ever ships: not the Pulumi components
#: (``sesmail/infra``), not the operator's CLI (``sesmail/cli``), not the local world or the demo.
#: ``tests/test_lambda_runtime.py`` imports every handler from its archive alone, so a handler
#: that needs a module outside its archive fails there.
_RUNTIME_FILES = (
    PurePosixPath("handlers/__init__.py"),
    PurePosixPath("handlers/forwarder.py"),
    PurePosixPath("handlers/token_monitor.py"),
    PurePosixPath("handlers/canary.py"),
    PurePosixPath("sesmail/__init__.py"),
    PurePosixPath("sesmail/names.py"),
    PurePosixPath("sesmail/runtime"),
)
INCLUDED: dict[str, tuple[PurePosixPath, ...]] = {
    RUNTIME: _RUNTIME_FILES,
    RENEWAL: (*_RUNTIME_FILES, PurePosixPath("handlers/renewal.py"), PurePosixPath("sesmail/renewal")),
}


def included_in(program: str) -> tuple[PurePosixPath, ...]:
    """The files and packages ``program``'s archive holds."""
    if program not in INCLUDED:
        raise ValueError(f"unknown Lambda program {program!r}: one of {', '.join(PROGRAMS)}")
    return INCLUDED[program]


def program_of(handler: str) -> str:
    """Which archive a function with this handler (``handlers.renewal.handler``) runs."""
    return RENEWAL if handler.startswith("handlers.renewal.") else RUNTIME


def lambda_source_files(root: Path = REPO_ROOT, *, program: str = RUNTIME) -> list[tuple[str, Path]]:
    """``(archive path, file)`` for every ``*.py`` of ``program``'s archive (:data:`INCLUDED`), sorted.

    Archive paths are relative to the repository root with ``/`` separators, so the handler
    ``handlers.forwarder.handler`` imports exactly as it does from a checkout. ``__pycache__`` is
    left out; nothing but ``.py`` files is selected. A listed path that does not exist is skipped:
    :func:`sesmail.infra.lambda_package.lambda_archive` names a missing handler, and a missing
    module fails the handler's import test.
    """
    selected: dict[str, Path] = {}
    for entry in included_in(program):
        path = root / entry
        if path.is_dir():
            files = [f for f in path.rglob("*.py") if f.is_file() and "__pycache__" not in f.parts]
        else:
            files = [path] if path.is_file() else []
        for file in files:
            selected[file.relative_to(root).as_posix()] = file
    return sorted(selected.items())


def write_zip(destination: Path, root: Path = REPO_ROOT, *, program: str = RUNTIME) -> list[str]:
    """Write the same files as a zip (for benchmarks and size checks); returns the archive paths.

    Entries get a fixed timestamp so two builds of the same sources are byte-identical.
    """
    names: list[str] = []
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in lambda_source_files(root, program=program):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            names.append(name)
    return names
