"""Keep peak RSS flat with the image size (issue 4: within 10% from 1 to 4 GiB)."""

from __future__ import annotations

import functools

_M_ARENA_MAX = -8  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_heap() -> None:
    """One malloc arena, and buffers of 256 KiB and more served by mmap.

    Decoder threads each get a glibc arena by default, and glibc raises its mmap
    threshold after the first freed MiB buffer, so freed buffers linger in several
    arenas and the peak RSS creeps up the longer a copy runs. With one arena and a
    fixed threshold, RSS tracks the bounded live data. Process-wide, applied once,
    before the first decoder thread allocates; a no-op where libc is not glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):
        pass
