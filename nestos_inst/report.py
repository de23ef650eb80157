"""The one way library code tells the user something: messages and progress.

Results go to stdout from the command line; everything else (status lines, warnings,
progress) goes through the current Reporter, which writes to stderr and, in service
mode, also to the journal. Low-level modules call say() instead of writing to stderr,
so a front end can redirect or capture all of it in one place.
"""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """One status line to the user."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
