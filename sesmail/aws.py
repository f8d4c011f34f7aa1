"""Lazily created, reused boto3 clients.

Creating a client costs tens of milliseconds, so a Lambda container makes only the ones an
invocation actually needs (the happy path never touches SQS) and keeps them while warm.
Endpoints follow boto3's own configuration, including ``AWS_ENDPOINT_URL`` (tests use moto).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botocore.config import Config

_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"mode": "standard", "max_attempts": 3},
)


class AwsClients:
    def __init__(self, region: str | None = None, profile: str | None = None) -> None:
        self._region = region
        self._profile = profile
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    def get(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            if self._session is None:
                import boto3

                self._session = boto3.session.Session(region_name=self._region, profile_name=self._profile)
            client = self._clients[service] = self._session.client(service, config=_CONFIG)
        return client

    @property
    def s3(self) -> Any:
        return self.get("s3")

    @property
    def sqs(self) -> Any:
        return self.get("sqs")

    @property
    def ssm(self) -> Any:
        return self.get("ssm")

    def read_parameters(self, names: Sequence[str]) -> Mapping[str, tuple[str, int]]:
        """{name: (decrypted value, version)} for those of ``names`` that exist (one API call)."""
        response = self.ssm.get_parameters(Names=list(names), WithDecryption=True)
        return {p["Name"]: (p["Value"], int(p["Version"])) for p in response.get("Parameters", [])}
