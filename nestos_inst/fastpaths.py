"""One switch for every speed trick, so each can be turned off with no change in results.

Each trick is a faster route to the same bytes and the same messages; with it off, the
plain route runs. ``NESTOS_INSTALLER_FAST_PATHS`` selects them: unset or ``all`` = every
trick, ``none`` = none, otherwise a comma-separated list of the names below to keep.
The test suite runs the network and verification tests both ways.

Names:
  plain-http  http:// on our own socket backend (net/plain.py), needed by `splice`
  splice      the kernel moves a plain-HTTP body to the file and GPG's pipe (tee)
  gpgconf     GPGME is told which gpg to run instead of asking gpgconf (verify.py)
  heap        one malloc arena, fixed mmap and trim thresholds (io/heap.py)
  direct-io   images go to block devices with O_DIRECT, around the page cache
              (io/pipeline.py: DirectWriter)
  gc-freeze   at the end of the program's command, the cyclic GC's objects are
              frozen so that interpreter shutdown does not traverse them (__main__)
"""

from __future__ import annotations

import os

NAMES = frozenset({"plain-http", "splice", "heap", "gpgconf", "direct-io", "gc-freeze"})
ENV = "NESTOS_INSTALLER_FAST_PATHS"


def enabled(name: str) -> bool:
    """Whether trick `name` may be used in this process (read on every call: cheap)."""
    if name not in NAMES:
        raise ValueError(f"unknown fast path {name!r}")
    value = os.environ.get(ENV, "all").strip()
    if value in ("", "all"):
        return True
    if value == "none":
        return False
    return name in {part.strip() for part in value.split(",")}
