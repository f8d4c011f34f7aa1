"""Pulumi.yaml and the example stack file stay in line with the program."""

from __future__ import annotations

from typing import Any

import yaml

from sesmail import names
from sesmail.infra.config import KEYS, NAMESPACE, StackConfig
from tests.infra.harness import REPO_ROOT, config_strings, example_config


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / name).read_text(encoding="utf-8"))
    return document


def test_project_file() -> None:
    project = load("Pulumi.yaml")
    assert project["name"] == names.PROJECT
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["backend"]["url"].startswith("file://")  # local state: no Pulumi Cloud account
    assert project.get("description")


def test_example_stack_config_is_valid_and_complete() -> None:
    config = example_config()
    assert config["aws:region"] in names.SES_RECEIVING_REGIONS
    ours = {key.split(":", 1)[1] for key in config if key.startswith(f"{NAMESPACE}:")}
    assert ours <= set(KEYS), ours - set(KEYS)
    assert {"domains", "alertEmails"} <= ours
    raw = {key.split(":", 1)[1]: value for key, value in config_strings(config).items()}
    parsed = StackConfig.parse("test", raw)
    assert parsed.domains == ("example.com",)


def test_every_config_key_is_documented_in_the_example_stack_file() -> None:
    text = (REPO_ROOT / "Pulumi.test.yaml").read_text(encoding="utf-8")
    for key in KEYS:
        assert f"{NAMESPACE}:{key}" in text, key
