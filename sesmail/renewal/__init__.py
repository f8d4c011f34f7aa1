"""Renewing a mailbox's Gmail token from a phone: the logic behind ``handlers/renewal.py``.

DESIGN.md, "Renewing from a phone". A Lambda function URL (``renewalUrl``) runs Google's OAuth
flow for web-server applications:

``GET /?mailbox=NAME``
    starts a flow: a random ``state``, PKCE S256, ``access_type=offline``, ``prompt=consent``, the
    consent scopes of the CLI (``names.CONSENT_SCOPES``: Gmail insert and labels, ``openid``,
    the e-mail scope) and ``login_hint`` = the mailbox's ``gmailAddress``. The answer is a 303 to
    the web client's ``auth_uri`` and a short-lived flow cookie that binds the flow to this browser.
``GET /callback?code=...&state=...`` (the redirect URI to register: ``{renewalUrl}callback``)
    checks the flow cookie and the state, exchanges the code, requires the id token to name the
    mailbox's account, proves the token by minting, then stores it and does what the CLI does
    after storing (:mod:`sesmail.renewal.finish`), and answers with a 303 to ``/done``.
``GET /done``
    the outcome, the mailbox and how much parked mail is on its way, for as long as the signed
    result cookie lives.

Modules: :mod:`.settings` (names, environment, SSM parameters), :mod:`.cookies` (signed
cookies, the PKCE verifier), :mod:`.google` (authorization URL, code exchange, id token checks),
:mod:`.finish` (store → publish hours → audit → start the drain, shared with the CLI),
:mod:`.app` (the routes). Standard library and botocore only, like every Lambda module.

The flow cookie, and why nothing secret is in it
------------------------------------------------
The cookie (``__Host-`` prefixed: ``Secure``, ``Path=/``, no ``Domain``; ``HttpOnly``,
``SameSite=Lax`` so Google's top-level redirect back carries it) holds ``state``, the mailbox
and the expiry (10 minutes), HMAC-SHA256-signed with a key derived from the SSM secret
``/ses-mail/{env}/gmail-forwarder/renewal-secret``. The PKCE verifier is *not* in it: it is
derived from the state with HMAC-SHA256 under a second, separately derived key
(:func:`sesmail.renewal.cookies.pkce_verifier`). HMAC is a pseudo-random function, so the
verifier of a flow is as unpredictable as a random one to anyone without the key, yet the
callback can recompute it without any server-side storage. So the cookie carries nothing
secret: nothing to encrypt (which the standard library cannot do soundly), and a stolen
cookie plus a stolen code still cannot be redeemed without the Lambda's key, the client secret
and Google's PKCE check.

Replays: the code is single-use at Google; the flow cookie is cleared by the callback that
used it; and a warm container also remembers the states it consumed until they expire, so a
replayed callback is refused before Google is asked.

Accepted disclosure: ``login_hint`` reveals a mailbox's ``gmailAddress`` to whoever knows the
renewal URL and the mailbox's name. The URL is the unguessable function URL host, shared only in
the token alarms' descriptions; everything the page *does* still requires that account's consent.
"""
