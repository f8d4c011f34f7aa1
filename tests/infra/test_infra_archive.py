"""The Lambda archive: handlers/ and sesmail/ without sesmail/infra, and nothing that needs pulumi."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from sesmail import names
from sesmail.infra.archive import RENEWAL, REPO_ROOT, RUNTIME, lambda_source_files, write_zip
from tests.infra.harness import ProgramRun

PULUMI_IMPORT = re.compile(r"^\s*(import\s+pulumi|from\s+pulumi)\b", re.MULTILINE)


def test_selected_files() -> None:
    files = lambda_source_files()
    archive_names = [name for name, _ in files]
    assert archive_names == sorted(archive_names)
    assert "sesmail/names.py" in archive_names
    assert "handlers/forwarder.py" in archive_names  # the module names.FORWARDER_HANDLER imports
    for name, path in files:
        assert name.endswith(".py"), name
        assert name.split("/")[0] in {"handlers", "sesmail"}, name
        assert not name.startswith("sesmail/infra"), name
        assert "__pycache__" not in name, name
        assert path == REPO_ROOT / name


def test_no_selected_file_imports_pulumi() -> None:
    offenders = [name for name, path in lambda_source_files() if PULUMI_IMPORT.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_selection_rules_on_a_synthetic_tree(tmp_path: Path) -> None:
    """By inclusion: the handlers, names.py and sesmail/runtime/ (deep); nothing else under sesmail/."""
    for relative in (
        "handlers/__init__.py",
        "handlers/forwarder.py",
        "handlers/renewal.py",
        "handlers/__pycache__/forwarder.cpython-312.pyc",
        "handlers/__pycache__/stale.py",
        "handlers/helper.py",
        "sesmail/__init__.py",
        "sesmail/names.py",
        "sesmail/runtime/__init__.py",
        "sesmail/runtime/deep/module.py",
        "sesmail/runtime/data.json",
        "sesmail/runtime/__pycache__/stale.py",
        "sesmail/renewal/page.py",
        "sesmail/cli/refresh.py",
        "sesmail/infra/component.py",
        "sesmail/stray.py",
        "tests/test_x.py",
        "__main__.py",
    ):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n", encoding="utf-8")
    runtime = [
        "handlers/__init__.py",
        "handlers/forwarder.py",
        "sesmail/__init__.py",
        "sesmail/names.py",
        "sesmail/runtime/__init__.py",
        "sesmail/runtime/deep/module.py",
    ]
    assert [name for name, _ in lambda_source_files(tmp_path)] == runtime
    assert [name for name, _ in lambda_source_files(tmp_path, program=RENEWAL)] == sorted(
        [*runtime, "handlers/renewal.py", "sesmail/renewal/page.py"]
    )


def test_every_module_of_the_package_belongs_to_a_program_or_is_never_shipped() -> None:
    """A new module under sesmail/ must be placed: in an archive, or in a package that never ships."""
    never = ("sesmail/infra", "sesmail/cli", "sesmail/local", "sesmail/demo", "sesmail/refresh.py")
    shipped = {name for program in (RUNTIME, RENEWAL) for name, _ in lambda_source_files(program=program)}
    for path in sorted((REPO_ROOT / "sesmail").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if "__pycache__" in relative:
            continue
        assert relative in shipped or relative.startswith(never), relative


def test_zip_holds_the_same_files_and_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    written = write_zip(first)
    write_zip(second)
    assert written == [name for name, _ in lambda_source_files()]
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == written
    assert first.read_bytes() == second.read_bytes()


def test_function_code_is_that_archive(example_run: ProgramRun) -> None:
    function = example_run.one("aws:lambda/function:Function", name=names.forwarder_function("test"))
    code = function.inputs["code"]
    assets = getattr(code, "assets", None)
    assert assets is not None, f"expected an AssetArchive, got {code!r}"
    assert sorted(assets) == [name for name, _ in lambda_source_files()]
    for name, asset in assets.items():
        assert Path(asset.path) == REPO_ROOT / name


def test_missing_handler_module_fails_the_program(tmp_path: Path) -> None:
    from sesmail.infra.forwarder import MissingHandlerError, lambda_archive

    (tmp_path / "sesmail").mkdir()
    (tmp_path / "sesmail" / "names.py").write_text("", encoding="utf-8")
    with pytest.raises(MissingHandlerError, match=r"handlers/forwarder\.py is missing"):
        lambda_archive(tmp_path)
