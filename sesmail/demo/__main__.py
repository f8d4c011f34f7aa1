"""``python -m sesmail.demo [--quick] [--report FILE.html]``."""

from __future__ import annotations

import sys

from sesmail.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
