"""Benchmark reference: an SES -> Gmail forwarder written the way such forwarders usually are.

NOT part of the product. It exists so the benchmarks can compare ses-mail's forwarder with the
common recipe, in the same run and against the same fakes:

- at import: X-Ray ``patch_all()``, a Powertools ``Logger``, the OAuth parameters read from SSM
  and ``googleapiclient.discovery.build("gmail", "v1", ...)`` from the bundled (static)
  discovery document;
- per message: ``creds.refresh(Request())`` (one token-endpoint call per message), the whole raw
  message read from S3 with ``get_object()["Body"].read()``, base64url-encoded into the JSON
  ``raw`` field of ``users.messages.import``.

It runs only in the separate benchmark virtualenv (``benchmarks/setup.sh``); ses-mail itself
never imports google-api-python-client, google-auth, aws-xray-sdk or Powertools. The parameter
names and the environment variables are ses-mail's, so both implementations read the same
fixtures.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
import google.auth.transport.requests
import google.oauth2.credentials
from aws_lambda_powertools import Logger
from aws_xray_sdk.core import patch_all
from googleapiclient.discovery import build

patch_all()
logger = Logger(service="gmail-forwarder")

ENV = os.environ["SESMAIL_ENV"]
PARAMETER_PREFIX = f"/ses-mail/{ENV}/gmail-forwarder/oauth"
GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.insert"
API_ENDPOINT = os.environ.get("GMAIL_API_BASE_URL", "https://gmail.googleapis.com").rstrip("/") + "/"

ssm = boto3.client("ssm")
s3 = boto3.client("s3")


def _parameter(name: str) -> str:
    return str(ssm.get_parameter(Name=f"{PARAMETER_PREFIX}/{name}", WithDecryption=True)["Parameter"]["Value"])


_client_json = json.loads(_parameter("client-credentials"))
_client = _client_json.get("installed") or _client_json["web"]
_refresh_token = json.loads(_parameter("refresh-token"))["token"]

credentials = google.oauth2.credentials.Credentials(
    token=None,
    refresh_token=_refresh_token,
    client_id=_client["client_id"],
    client_secret=_client["client_secret"],
    token_uri=_client["token_uri"],
    scopes=[GMAIL_SCOPE],
)
gmail = build(
    "gmail",
    "v1",
    credentials=credentials,
    client_options={"api_endpoint": API_ENDPOINT},
    static_discovery=True,
    cache_discovery=False,
)


def _notification(record: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(record["body"])
    if body.get("Type") == "Notification":
        body = json.loads(body["Message"])
    return body  # type: ignore[no-any-return]


def forward(notification: dict[str, Any]) -> str:
    receipt = notification["receipt"]
    action = receipt["action"]
    credentials.refresh(google.auth.transport.requests.Request())
    raw = s3.get_object(Bucket=action["bucketName"], Key=action["objectKey"])["Body"].read()
    spam = "FAIL" in (receipt.get("spamVerdict", {}).get("status"), receipt.get("virusVerdict", {}).get("status"))
    result = (
        gmail.users()
        .messages()
        .import_(
            userId="me",
            internalDateSource="dateHeader",
            body={
                "raw": base64.urlsafe_b64encode(raw).decode("ascii"),
                "labelIds": ["SPAM"] if spam else ["INBOX", "UNREAD"],
            },
        )
        .execute()
    )
    logger.info("imported", extra={"message_id": notification["mail"]["messageId"], "gmail_id": result["id"]})
    return str(result["id"])


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        try:
            forward(_notification(record))
        except Exception:
            logger.exception("forwarding failed")
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
