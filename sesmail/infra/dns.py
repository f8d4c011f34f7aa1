"""The DNS records a user must publish for SES to receive and verify their domains (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from sesmail import names

#: SES's DKIM CNAME target domain (``<token>.dkim.amazonses.com``).
DKIM_TARGET_DOMAIN = "dkim.amazonses.com"


class DnsRecord(TypedDict):
    type: str
    name: str
    value: str


def domain_records(domain: str, region: str, verification_token: str, dkim_tokens: Sequence[str]) -> list[DnsRecord]:
    """MX (receiving), ``_amazonses`` TXT (identity verification) and the three DKIM CNAMEs."""
    records: list[DnsRecord] = [
        {"type": "MX", "name": domain, "value": names.mx_record(region)},
        {"type": "TXT", "name": f"_amazonses.{domain}", "value": verification_token},
    ]
    records.extend(
        {
            "type": "CNAME",
            "name": f"{token}._domainkey.{domain}",
            "value": f"{token}.{DKIM_TARGET_DOMAIN}",
        }
        for token in dkim_tokens
    )
    return records
