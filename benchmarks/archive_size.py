"""Archive: zipped size of the Lambda deployment package, against the reference's.

    .venv/bin/python -m benchmarks.archive_size [--smoke]

Ours is exactly what the Pulumi program ships: the files of
``sesmail.infra.archive.lambda_source_files`` (every ``*.py`` of ``handlers/`` and ``sesmail/``
except ``sesmail/infra/``), zipped by ``sesmail.infra.archive.write_zip`` (deflate).

The reference's package is its handler plus its dependency set as ``pip install`` leaves it in
the reference virtualenv's site-packages, less what the Lambda Python runtime already provides
(boto3, botocore, s3transfer, jmespath, python-dateutil, six, urllib3) and less pip/setuptools,
zipped the same way. Byte code (``__pycache__``) is left out of both, as ours ships none.
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET_BYTES = 100 * 1024
#: Top-level names in site-packages that the Lambda Python runtime already ships, or that only
#: install tools need.
NOT_SHIPPED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "python_dateutil",
    "six",
    "urllib3",
    "pip",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "distutils-precedence.pth",
    "__pycache__",
)


def _shipped(top: str) -> bool:
    base = top.split("-", 1)[0] if top.endswith(".dist-info") else top
    return base.removesuffix(".py") not in NOT_SHIPPED and top not in NOT_SHIPPED


def _site_packages() -> Path | None:
    found = sorted(common.REFERENCE_VENV.glob("lib/python*/site-packages"))
    return found[0] if found else None


def _zip_tree(destination: Path, files: list[tuple[str, Path]]) -> None:
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


def measure() -> dict[str, Any]:
    from sesmail.infra.archive import RENEWAL, RUNTIME, lambda_source_files, write_zip

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # "ours": the mail path's functions; "renewal page": its own archive (the runtime plus the page).
        for kind, program in (("ours", RUNTIME), ("renewal page", RENEWAL)):
            ours_zip = Path(tmp) / f"{program}.zip"
            names = write_zip(ours_zip, common.REPO, program=program)
            ours_files = lambda_source_files(common.REPO, program=program)
            result[kind] = {
                "files": len(names),
                "unzipped_bytes": sum(path.stat().st_size for _, path in ours_files),
                "zipped_bytes": ours_zip.stat().st_size,
                "selection": f"sesmail.infra.archive.lambda_source_files(program={program!r})",
            }
        site = _site_packages()
        if site is not None:
            files: list[tuple[str, Path]] = [
                ("forwarder_reference.py", common.REFERENCE_DIR / "forwarder_reference.py")
            ]
            packages: dict[str, int] = {}
            for top in sorted(site.iterdir()):
                if not _shipped(top.name):
                    continue
                paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
                for path in paths:
                    if "__pycache__" in path.parts or path.suffix == ".pyc":
                        continue
                    files.append((path.relative_to(site).as_posix(), path))
                    packages[top.name] = packages.get(top.name, 0) + path.stat().st_size
            ref_zip = Path(tmp) / "reference.zip"
            _zip_tree(ref_zip, files)
            discovery = [f for f in files if "/discovery_cache/documents/" in f[0]]
            disc_zip = Path(tmp) / "discovery.zip"
            _zip_tree(disc_zip, discovery)
            biggest = sorted(
                ((size, name) for name, size in packages.items() if not name.endswith(".dist-info")), reverse=True
            )
            result["reference"] = {
                "files": len(files),
                "unzipped_bytes": sum(path.stat().st_size for _, path in files),
                "zipped_bytes": ref_zip.stat().st_size,
                "discovery_documents_zipped_bytes": disc_zip.stat().st_size,
                "largest_packages": [(name, size) for size, name in biggest[:6]],
            }
    return result


def report(result: dict[str, Any]) -> str:
    rows = []
    for kind in ("ours", "renewal page", "reference"):
        r = result.get(kind)
        if r:
            rows.append(
                [kind, r["files"], f"{r['unzipped_bytes'] / 1024:,.1f} KiB", f"{r['zipped_bytes'] / 1024:,.1f} KiB"]
            )
    lines = [
        "Archive: the Lambda deployment package, zipped (deflate)",
        common.table(["package", "files", "unzipped", "zipped"], rows),
    ]
    ref = result.get("reference")
    if ref:
        ratio = ref["zipped_bytes"] / result["ours"]["zipped_bytes"]
        lines.append(
            f"reference / ours: {ratio:,.0f}x; Google's bundled discovery documents alone zip to"
            f" {ref['discovery_documents_zipped_bytes'] / 1024 / 1024:.1f} MiB"
        )
        lines.append(
            "largest reference packages (unzipped): "
            + ", ".join(f"{name} {size / 1024 / 1024:.1f} MiB" for name, size in ref["largest_packages"])
        )
    ours = result["ours"]["zipped_bytes"]
    lines.append(f"target: <= 100 KiB -> {'MET' if ours <= TARGET_BYTES else 'NOT MET'} ({ours / 1024:.1f} KiB)")
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> common.Summary:
    ours = result["ours"]
    ref = result.get("reference")
    return common.Summary(
        "archive (zipped)",
        f"{ours['zipped_bytes'] / 1024:.1f} KiB ({ours['files']} files)",
        f"{ref['zipped_bytes'] / 1024 / 1024:.1f} MiB" if ref else "(not installed)",
        "<= 100 KB",
        ours["zipped_bytes"] <= TARGET_BYTES,
        f"reference {ref['zipped_bytes'] / ours['zipped_bytes']:,.0f}x ours" if ref else "",
    )


def run(smoke: bool = False) -> common.Summary:
    result = measure()
    print(report(result), flush=True)
    if not smoke:
        common.save_result("archive_size", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="same measurement (it takes about a second)")
    args = parser.parse_args()
    run(args.smoke)


if __name__ == "__main__":
    main()
