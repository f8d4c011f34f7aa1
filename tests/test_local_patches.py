"""``sesmail.local.patches.Patches``: what the demo patches is exactly restored, as pytest's monkeypatch would."""

from __future__ import annotations

import os
import types

import pytest

from sesmail.local.patches import Patcher, Patches


class Base:
    value = 1

    @staticmethod
    def helper() -> int:
        return 1


class Child(Base):
    pass


def test_attributes_come_back_as_they_were_stored() -> None:
    module = types.ModuleType("probe")
    module.present = "before"  # type: ignore[attr-defined]
    with Patches() as patches:
        patches.setattr(Child, "value", 2)  # inherited: overridden on Child only
        patches.setattr(Base, "helper", staticmethod(lambda: 3))
        patches.setattr(module, "present", "during")
        patches.setattr(module, "absent", "during", raising=False)
        assert (Child.value, Base.value, Base.helper(), module.present) == (2, 1, 3, "during")  # type: ignore[attr-defined]
    assert "value" not in Child.__dict__ and Child.value == 1
    assert isinstance(Base.__dict__["helper"], staticmethod) and Base.helper() == 1
    assert module.present == "before" and not hasattr(module, "absent")  # type: ignore[attr-defined]


def test_environment_variables_come_back_newest_change_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESMAIL_PATCH_PROBE", "original")
    monkeypatch.delenv("SESMAIL_PATCH_NEW", raising=False)
    patches = Patches()
    patches.setenv("SESMAIL_PATCH_PROBE", "first")
    patches.setenv("SESMAIL_PATCH_PROBE", "second")
    patches.delenv("SESMAIL_PATCH_PROBE")
    patches.setenv("SESMAIL_PATCH_NEW", "x")
    assert "SESMAIL_PATCH_PROBE" not in os.environ and os.environ["SESMAIL_PATCH_NEW"] == "x"
    patches.undo()
    assert os.environ["SESMAIL_PATCH_PROBE"] == "original" and "SESMAIL_PATCH_NEW" not in os.environ


def test_mistakes_are_refused_like_pytest_does() -> None:
    patches = Patches()
    with pytest.raises(AttributeError):
        patches.setattr(types.ModuleType("probe"), "missing", 1)
    with pytest.raises(KeyError):
        patches.delenv("SESMAIL_PATCH_NEVER_SET")
    patches.delenv("SESMAIL_PATCH_NEVER_SET", raising=False)


def test_pytest_s_monkeypatch_is_a_patcher(monkeypatch: pytest.MonkeyPatch) -> None:
    patcher: Patcher = monkeypatch  # checked by mypy: the world takes either
    patcher.setenv("SESMAIL_PATCH_PROBE", "via pytest")
    assert os.environ["SESMAIL_PATCH_PROBE"] == "via pytest"
