"""A spoof and a genuine message, side by side, through the deployed program (default ``authFailures: spam``).

The forged one claims to come from a bank whose DMARC policy is ``p=reject``; SES's receipt says
DMARC FAIL. Gmail's import would take it into the inbox as if genuine: the forwarder labels it
``SPAM`` instead, while the genuine message lands in the inbox, unread.
"""

from __future__ import annotations

from sesmail import names
from sesmail.local.world import System

SPOOFED = {
    "spfVerdict": {"status": "FAIL"},
    "dkimVerdict": {"status": "FAIL"},
    "dmarcVerdict": {"status": "FAIL"},
    "dmarcPolicy": "reject",
}


def test_a_spoof_lands_in_spam_and_the_genuine_message_in_the_inbox(system: System) -> None:
    install = system.refresh("--client-secret", str(system.client_secret_file), "--no-retry")
    assert install.returncode == 0, install.stderr

    genuine = system.ses.receive("genuine", sender="Alice <alice@example.org>")
    spoof = system.ses.receive("spoof", sender="Bank <security@bank.example>", verdicts=SPOOFED)
    system.inbound.poll()

    placed = {m.raw: m.label_ids for m in system.google.messages}
    assert placed == {genuine.raw: ["INBOX", "UNREAD"], spoof.raw: ["SPAM"]}
    for url in ("retryQueueUrl", "inboundDlqUrl"):
        assert system.depth(system.output(url)) == 0
    environment = system.deployment.one("aws:lambda/function:Function", name=names.forwarder_function("test"))
    assert environment.inputs["environment"]["variables"][names.ENV_VAR_AUTH_FAILURES] == "spam"
