"""Which files make up the Lambda deployment archive (pure: no pulumi import).

DESIGN.md: the archive holds ``handlers/`` and ``sesmail/`` without ``sesmail/infra/`` and needs
nothing beyond what the Lambda Python runtime ships. The renewal page gets its own archive: the
same runtime plus the page (``RENEWAL_ONLY``), so the mail path's archive does not grow with it.
The Pulumi program, the tests and the benchmarks all call :func:`lambda_source_files`, so they
measure and check the very same files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

#: Repository root (this file is ``<root>/sesmail/infra/archive.py``).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Top-level packages shipped to Lambda.
PACKAGES = ("handlers", "sesmail")

#: The archives: every function of the stack runs one of these two programs.
#: ``runtime``: the forwarder, the token monitor and the canary (and the retry processor's forwarder).
#: ``renewal``: the phone renewal page, which is the runtime plus the page's own files.
RUNTIME = "runtime"
RENEWAL = "renewal"
PROGRAMS = (RUNTIME, RENEWAL)

#: Never shipped: the Pulumi components (they import pulumi, which Lambda does not have), and the
#: operator's refresh CLI, which no handler imports (its OAuth flow needs google-auth-oauthlib,
#: which Lambda does not have either). Storing a token and auditing it are shared with the
#: renewal page, a Lambda, so ``token_store`` and ``audit`` ship. ``tests/test_lambda_runtime.py``
#: imports every handler from its archive alone, so a handler needing an excluded module fails there.
NEVER_SHIPPED = (
    PurePosixPath("sesmail/infra"),
    # The local world (tests/e2e and the demo) needs moto and pulumi, which Lambda does not have;
    # the demo command (``python -m sesmail.demo``) runs that world on an operator's machine.
    PurePosixPath("sesmail/local"),
    PurePosixPath("sesmail/demo"),
    *(
        PurePosixPath(f"sesmail/{module}.py")
        for module in ("refresh", "refresh_args", "refresh_errors", "reconcile_cli", "oauth_flow")
    ),
)
#: Only in the renewal page's archive: the mail path's functions never serve a web page, nor
#: store a token or write an audit record (the page and the CLI do), so they neither carry nor
#: cold-start these modules.
RENEWAL_ONLY = (
    PurePosixPath("sesmail/renewal"),
    PurePosixPath("sesmail/pages.py"),
    PurePosixPath("sesmail/token_store.py"),
    PurePosixPath("sesmail/audit.py"),
    PurePosixPath("sesmail/identity.py"),
    PurePosixPath("handlers/renewal.py"),
)


def excluded_from(program: str) -> tuple[PurePosixPath, ...]:
    """The paths ``program``'s archive leaves out."""
    if program not in PROGRAMS:
        raise ValueError(f"unknown Lambda program {program!r}: one of {', '.join(PROGRAMS)}")
    return NEVER_SHIPPED if program == RENEWAL else (*NEVER_SHIPPED, *RENEWAL_ONLY)


def program_of(handler: str) -> str:
    """Which archive a function with this handler (``handlers.renewal.handler``) runs."""
    return RENEWAL if handler.startswith("handlers.renewal.") else RUNTIME


def lambda_source_files(root: Path = REPO_ROOT, *, program: str = RUNTIME) -> list[tuple[str, Path]]:
    """``(archive path, file)`` for every ``*.py`` of ``program``'s archive, sorted.

    Archive paths are relative to the repository root with ``/`` separators, so the handler
    ``handlers.forwarder.handler`` imports exactly as it does from a checkout. ``__pycache__``
    and :func:`excluded_from` are left out; nothing but ``.py`` files is selected.
    """
    excluded = excluded_from(program)
    selected: list[tuple[str, Path]] = []
    for package in PACKAGES:
        base = root / package
        if not base.is_dir():
            continue
        for path in base.rglob("*.py"):
            relative = PurePosixPath(path.relative_to(root).as_posix())
            if "__pycache__" in relative.parts or not path.is_file():
                continue
            if any(relative.is_relative_to(left_out) for left_out in excluded):
                continue
            selected.append((str(relative), path))
    return sorted(selected)


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
