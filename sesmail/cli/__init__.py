"""The operator's command, ``python -m sesmail.refresh``: renewing a token on a laptop, storing the
renewal page's web client, and ``--reconcile``. Runs on the operator's machine, never in Lambda;
what it shares with the renewal page (storing a token, the audit record, the finish) is in
:mod:`sesmail.renewal`.
"""
