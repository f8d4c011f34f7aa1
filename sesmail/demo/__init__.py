"""``python -m sesmail.demo``: one week of ses-mail on this machine, without an AWS account or a network.

The real Pulumi program is deployed into an in-process moto, next to a fake Google on 127.0.0.1
(:mod:`sesmail.local`, the world tests/e2e runs in). Then a week is played out on a simulated
clock, through the system's edges only: two mailboxes get their tokens through the real refresh
CLI, mail arrives, alice's token dies and her mail waits while bob's flows, the monitor counts
down to the alarm, alice renews from her phone with the link in the alarm's e-mail, and the
backlog lands in her Gmail at its original dates. It ends with what happened, counted.

Modules: :mod:`.story` (the week, as events), :mod:`.console` (one line per event, and the
summary table), :mod:`.report` (the same story as a small self-contained HTML page),
:mod:`.cli` (options, the world's set-up and tear-down).
"""
