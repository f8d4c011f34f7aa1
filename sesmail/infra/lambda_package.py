"""The one Lambda deployment package every function of the stack runs (forwarder, token monitor).

Both functions ship the same files (``archive.lambda_source_files``) and differ only in their
handler, so there is one definition of the package and one check that it holds every handler
module the stack names: a missing module fails ``pulumi up`` before anything is deployed,
instead of failing every invocation afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pulumi

from sesmail import names
from sesmail.infra.archive import REPO_ROOT, lambda_source_files

#: Every Lambda handler of the stack; the package must contain each one's module.
LAMBDA_HANDLERS = (names.FORWARDER_HANDLER, names.TOKEN_MONITOR_HANDLER)


class MissingHandlerError(pulumi.RunError):
    """The archive would not contain the module a Lambda handler names."""


def handler_module_path(handler: str = names.FORWARDER_HANDLER) -> str:
    """``handlers.forwarder.handler`` → ``handlers/forwarder.py`` (its path in the archive)."""
    module = handler.rpartition(".")[0]
    return module.replace(".", "/") + ".py"


def lambda_archive(root: Path = REPO_ROOT, handlers: Sequence[str] = LAMBDA_HANDLERS) -> pulumi.AssetArchive:
    """The deployment package: exactly the files of ``archive.lambda_source_files``."""
    files = lambda_source_files(root)
    shipped = {name for name, _ in files}
    for handler in handlers:
        if handler_module_path(handler) not in shipped:
            raise MissingHandlerError(
                f"{handler_module_path(handler)} is missing under {root}: the Lambda whose handler is "
                f"{handler} would fail on every invocation"
            )
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in files})
