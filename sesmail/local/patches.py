"""Changes to modules and the environment that the local world makes, and undoes.

The world patches a few things in this process (moto's Lambda backend runs the deployed handlers
here, the handlers' environment is the functions' environment, the token monitor's clock is the
simulated one ...). Everything that does so takes a :class:`Patcher`: the three methods of
``pytest.MonkeyPatch`` it uses, so a test passes its ``monkeypatch`` fixture (which satisfies the
protocol structurally), and a program without pytest (``python -m sesmail.demo``) passes a
:class:`Patches`, which records every change and undoes them all, newest first, on
:meth:`Patches.undo` or when its ``with`` block ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

#: Stands for "the attribute (or variable) did not exist" in the undo records.
_ABSENT: Any = object()


class Patcher(Protocol):
    """What the local world needs to change in this process (the subset of ``pytest.MonkeyPatch`` it uses)."""

    def setattr(self, target: Any, name: str, value: Any, raising: bool = True) -> None:
        """Set ``target.name`` to ``value`` (``target`` an object or a module, not a dotted string here)."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        """Set the environment variable ``name`` to ``value``."""

    def delenv(self, name: str, raising: bool = True) -> None:
        """Remove the environment variable ``name`` (``raising``: fail when it is not set)."""


class Patches:
    """A :class:`Patcher` for programs without pytest: every change is recorded and undone, newest first.

    Usage::

        with Patches() as patches:
            system = start_system(server, google, patches, work_dir)
            ...
        # every attribute and environment variable is back as it was
    """

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def setattr(self, target: Any, name: str, value: Any, raising: bool = True) -> None:
        previous = getattr(target, name, _ABSENT)
        if previous is _ABSENT and raising:
            raise AttributeError(f"{target!r} has no attribute {name!r}")
        # A class's own attribute is restored as it was stored (a staticmethod stays one), and an
        # inherited one by removing the override again (as pytest does).
        if isinstance(target, type):
            previous = target.__dict__.get(name, _ABSENT)
        setattr(target, name, value)

        def restore() -> None:
            if previous is _ABSENT:
                delattr(target, name)
            else:
                setattr(target, name, previous)

        self._undo.append(restore)

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        value = str(value)
        if prepend is not None and name in os.environ:
            value = value + prepend + os.environ[name]
        self._remember_env(name)
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        if name not in os.environ:
            if raising:
                raise KeyError(name)
            return
        self._remember_env(name)
        del os.environ[name]

    def _remember_env(self, name: str) -> None:
        previous = os.environ.get(name, _ABSENT)

        def restore() -> None:
            if previous is _ABSENT:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous

        self._undo.append(restore)

    def undo(self) -> None:
        """Undo every change, newest first; the object can be used again afterwards."""
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Patches:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.undo()
