"""Run moto's server in its own process, bound to 127.0.0.1 on an ephemeral port.

Why a separate process rather than ``ThreadedMotoServer`` inside pytest: moto keeps its
backends and its user config (e.g. ``stepfunctions.execute_state_machine``, IAM auth
enforcement) in module globals, which the in-process ``mock_aws`` tests of other suites share.
A process of its own keeps both apart and lets ``pytest -n`` give each worker its own server.

Prints ``PORT <n>`` once the server listens; exits when its stdin closes (the parent died or
stopped it), so it never outlives the test session.
"""

from __future__ import annotations

import sys

from moto.server import ThreadedMotoServer


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(f"PORT {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
