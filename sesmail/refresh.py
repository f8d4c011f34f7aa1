"""``python -m sesmail.refresh``: the operator's command, a public contract (DESIGN.md, "Refresh CLI").

The CLI lives in :mod:`sesmail.cli`; this module only keeps the command's name.
"""

import sys

from sesmail.cli.refresh import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
