"""Lazily created, reused AWS clients, built on botocore directly.

Creating a client costs tens of milliseconds, so a Lambda container makes only the ones an
invocation actually needs (the happy path never touches SQS) and keeps them while warm.
boto3 adds nothing a client needs here but its import time (~12 ms of every cold start,
measured by ``benchmarks/cold_start.py``). Credentials, region and endpoints follow the usual
AWS configuration chain, including ``AWS_PROFILE`` and ``AWS_ENDPOINT_URL`` (tests use moto).
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
                import botocore.session

                self._session = botocore.session.Session(profile=self._profile)
            client = self._session.create_client(service, region_name=self._region, config=_CONFIG)
            self._clients[service] = client
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
