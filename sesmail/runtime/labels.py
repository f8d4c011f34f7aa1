"""Configured Gmail labels by name: resolved to ids through Gmail's labels API, created when missing.

People know their labels by the names Gmail shows (``Receipts``, ``Family/School``); an import
carries label *ids* (``Label_12``). :class:`LabelResolver` lists the mailbox's labels once per
warm container (``users.labels.list``) and keeps the name -> id map; a name the mailbox lacks is
created (``users.labels.create``), its parents first (``Family`` before ``Family/School``), since
Gmail nests a label under an existing parent only. Ids pass through untouched: system labels
(``INBOX``, ``IMPORTANT``, ...) and user label ids (``Label_12``), so a deployment configured
with ids only makes no labels call at all, and a token granted before ``gmail.labels`` was in
the consent keeps working for it.

Gmail compares label names without regard to case: creating ``receipts`` next to ``Receipts``
answers 409 "Label name exists or conflicts". The same 409 answers a create that lost a race
with another container creating the same label, so a 409 re-lists and takes the existing id:
a missing label is created once, whoever gets there first.

Every other non-2xx answer is classified by :func:`sesmail.runtime.errors.classify_gmail_answer`; a
refused scope (403 ``insufficientPermissions``) additionally says how to grant it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence

from sesmail import names
from sesmail.runtime.errors import MailboxRefusedError, SesMailError, TransientError, classify
from sesmail.runtime.gmail import answer_error, answer_reasons, authorized
from sesmail.runtime.http import HttpClient, Response
from sesmail.runtime.log import get_logger
from sesmail.runtime.tokens import AccessTokenProvider

log = get_logger("sesmail.runtime.labels")

LABELS_TIMEOUT_SECONDS = 30.0
#: Google's reason for a token that lacks the method's scope (here: gmail.labels).
INSUFFICIENT_PERMISSIONS = "insufficientPermissions"
#: Gmail separates a nested label's parents with this.
NESTING = "/"
_USER_LABEL_ID = re.compile(r"Label_[0-9]+")
#: Shown in the Gmail label list and on messages, like a label made in Gmail's own UI.
_VISIBLE = {"labelListVisibility": "labelShow", "messageListVisibility": "show"}


def is_label_id(label: str) -> bool:
    """An id Gmail understands as it is: a system label id or a user label's ``Label_<n>``."""
    return label in names.GMAIL_SYSTEM_LABEL_IDS or _USER_LABEL_ID.fullmatch(label) is not None


def lineage(name: str) -> list[str]:
    """``A/B/C`` -> ``[A, A/B, A/B/C]``: the labels that must exist, parents first."""
    parts = name.split(NESTING)
    return [NESTING.join(parts[: depth + 1]) for depth in range(len(parts))]


def _lacks_scope(response: Response) -> bool:
    """Gmail's 403 for a token without the method's scope (here: gmail.labels)."""
    return response.status == 403 and INSUFFICIENT_PERMISSIONS in answer_reasons(response)


def _key(name: str) -> str:
    """How Gmail tells two names apart: not by case."""
    return name.casefold()


class LabelResolver:
    """Configured label names -> ids, cached for the container's life; see the module docstring.

    Holds a lock while it resolves, so one container never lists or creates twice at once; the
    HTTP client itself serves one invocation at a time.
    """

    def __init__(self, base_url: str, tokens: AccessTokenProvider, http: HttpClient, *, env: str) -> None:
        self._url = f"{base_url.rstrip('/')}{names.GMAIL_LABELS_PATH}"
        self._tokens = tokens
        self._http = http
        self._env = env
        self._ids: dict[str, str] | None = None
        self._lock = threading.Lock()

    def resolve(self, labels: Sequence[str]) -> list[str]:
        """The ids of ``labels``, in order; names are listed (once) and created when missing."""
        if all(is_label_id(label) for label in labels):
            return list(labels)
        with self._lock:
            return [label if is_label_id(label) else self._id_for(label) for label in labels]

    def stale(self, labels: Sequence[str]) -> bool:
        """Gmail refused an id this cache gave out (the label was deleted in Gmail): list again next time.

        True when ``labels`` holds a name, i.e. resolving again can give a different id.
        """
        with self._lock:
            self._ids = None
        named = [label for label in labels if not is_label_id(label)]
        if named:
            log.warning(
                "Gmail refused a cached label id; listing the labels again",
                extra={"event": "labels.stale", "labels": named},
            )
        return bool(named)

    # --- resolution (under the lock) -------------------------------------------------------------

    def _id_for(self, name: str) -> str:
        ids = self._known()
        if _key(name) not in ids:
            for label in lineage(name):
                if _key(label) not in ids:
                    ids = self._create(label)
        return ids[_key(name)]

    def _known(self) -> dict[str, str]:
        if self._ids is None:
            self._ids = self._list()
        return self._ids

    def _list(self) -> dict[str, str]:
        payload = self._json(self._call("GET", None))
        labels = payload.get("labels", [])
        if not isinstance(labels, list):
            raise TransientError("Gmail listed labels without a 'labels' list")
        ids = {
            _key(str(label["name"])): str(label["id"])
            for label in labels
            if isinstance(label, dict) and "name" in label and "id" in label
        }
        log.info("listed the mailbox's Gmail labels", extra={"event": "labels.listed", "count": len(ids)})
        return ids

    def _create(self, name: str) -> dict[str, str]:
        """Create ``name``; on 409 (it exists, or another container just made it) use Gmail's own id."""
        response = self._call("POST", {"name": name, **_VISIBLE})
        if response.status == 409:
            ids = self._ids = self._list()
            if _key(name) not in ids:
                raise MailboxRefusedError(
                    f"Gmail refuses to create the label {name!r}: its name exists or conflicts with one Gmail "
                    "keeps for itself; rename it in ses-mail:extraLabels"
                )
            log.info("label already existed", extra={"event": "labels.exists", "label": name})
            return ids
        label_id = str(self._json(response).get("id") or "")
        if not label_id:
            raise TransientError(f"Gmail created the label {name!r} without answering its id")
        ids = self._known()
        ids[_key(name)] = label_id
        log.info("created a Gmail label", extra={"event": "labels.created", "label": name, "labelId": label_id})
        return ids

    # --- HTTP ------------------------------------------------------------------------------------

    def _call(self, method: str, body: dict[str, str] | None) -> Response:
        """One labels call under :func:`sesmail.runtime.gmail.authorized` (a 401 mints once more); 409 is the caller's.

        A missing scope is tried once more if the stored token changed meanwhile: the operator
        renews to grant it, and this warm container would otherwise keep its old grant.
        """
        data = None if body is None else json.dumps(body).encode()
        response = authorized(self._tokens, lambda access_token: self._send(method, access_token, data))
        if _lacks_scope(response) and self._tokens.renewed():
            response = authorized(self._tokens, lambda access_token: self._send(method, access_token, data))
        if 200 <= response.status < 300 or (method == "POST" and response.status == 409):
            return response
        raise self._refusal(response)

    def _send(self, method: str, access_token: str, data: bytes | None) -> Response:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json; charset=UTF-8"
        try:
            return self._http.request(method, self._url, headers=headers, body=data, timeout=LABELS_TIMEOUT_SECONDS)
        except Exception as exc:
            raise classify(exc) from None

    def _refusal(self, response: Response) -> SesMailError:
        """The classifier's verdict; a missing gmail.labels scope also says how to grant it."""
        error = answer_error(response)
        if isinstance(error, MailboxRefusedError) and _lacks_scope(response):
            return MailboxRefusedError(
                "the Gmail token may not read or create labels (scope gmail.labels), which label names in "
                f"GMAIL_LABELS need; renew once to grant label access: {names.refresh_command(self._env)} "
                f"({error.reason})"
            )
        return error

    @staticmethod
    def _json(response: Response) -> dict[str, object]:
        try:
            payload = json.loads(response.body)
        except ValueError:
            raise TransientError(f"Gmail's labels API answered {response.status} with a non-JSON body") from None
        if not isinstance(payload, dict):
            raise TransientError(f"Gmail's labels API answered {response.status} with JSON that is not an object")
        return payload
