"""The forwarder's own Gmail client against the strict fake Google.

tests/test_fake_google.py proves the fake refuses what Gmail refuses. This is the other half, for
the one client that matters: the requests ``sesmail.runtime.gmail`` really builds (query string, metadata,
multipart framing, streamed body), sent through its own HTTP client and token provider, are ones
the strict fake accepts; and a configured label the mailbox lacks comes back as Gmail's
400 "Invalid label". How the forwarder classifies that answer is the classifier's business
(sesmail/runtime/errors.py), so only what the Gmail client raises is pinned here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest

from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.runtime.errors import SesMailError
from sesmail.runtime.gmail import BodyOpener, GmailImporter, labels_for
from sesmail.runtime.http import HttpClient
from sesmail.runtime.tokens import AccessTokenProvider
from tests.conftest import ENV, raw_message


def _importer(google: FakeGoogle) -> GmailImporter:
    """The forwarder's Gmail client, minting from a refresh token as it would from SSM."""
    stored = {
        names.client_credentials_parameter(ENV): (json.dumps(google.client_json()), 1),
        names.refresh_token_parameter(ENV): (json.dumps({"token": google.issue_refresh_token()}), 1),
    }

    def read(wanted: Sequence[str]) -> Mapping[str, tuple[str, int]]:
        return {name: stored[name] for name in wanted if name in stored}

    http = HttpClient()
    return GmailImporter(google.base_url, AccessTokenProvider(ENV, read, http), http)


def _streamed(raw: bytes) -> BodyOpener:
    """The message as S3 streams it: in pieces, with its exact size known up front."""
    return lambda: (iter([raw[:10], raw[10:]]), len(raw))


def test_the_forwarders_imports_are_accepted_with_labels_that_exist(google: FakeGoogle) -> None:
    extra = [google.add_label("Receipts"), google.add_label("Family/School"), "IMPORTANT"]
    importer = _importer(google)
    raw = raw_message("m1")

    inbox = importer.import_message(_streamed(raw), labels_for(False, extra))
    spam = importer.import_message(_streamed(raw), labels_for(True, extra))

    first, second = google.messages
    assert (inbox.gmail_id, spam.gmail_id) == (first.id, second.id)
    assert first.label_ids == labels_for(False, extra)
    assert second.label_ids == labels_for(True, extra)
    assert {"INBOX", "SPAM"} & set(first.label_ids) == {"INBOX"}
    assert {"INBOX", "SPAM"} & set(second.label_ids) == {"SPAM"}
    assert first.params == {"uploadType": "multipart", "internalDateSource": "dateHeader"}
    assert first.raw == second.raw == raw
    assert google.internal_errors == []


def test_a_configured_label_the_mailbox_lacks_is_refused_as_invalid_label(google: FakeGoogle) -> None:
    google.add_label("Receipts")  # Label_1 exists; the configuration names one that does not
    importer = _importer(google)

    with pytest.raises(SesMailError) as refused:
        importer.import_message(_streamed(raw_message("m1")), labels_for(False, ["Label_1", "Label_99"]))

    assert "Invalid label: Label_99" in refused.value.reason
    assert google.messages == []
    assert google.import_requests == 1  # answered once, and the client did not retry a 400
