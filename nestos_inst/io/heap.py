"""The malloc settings for commands that stream images, set once by the entry point.

Called by nestos_inst.__main__ before a command runs, never as a side effect of an I/O
helper, and switched off with NESTOS_INSTALLER_FAST_PATHS (name `heap`, see
nestos_inst/fastpaths.py). Results are the same either way; memory and speed differ
(docs/internals-net.md has the figures).
"""

from __future__ import annotations

_M_ARENA_MAX = -8  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
# Above the largest buffer a copy allocates (xz blocks of `xz -T` at -6 are 24 MiB):
# buffers are then reused from the heap instead of being mmap'd and faulted in afresh
# for every block.
_MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap that stays mapped. glibc's default (128 KiB) hands
# every freed output chunk back to the kernel at once, so the next chunk is page-faulted
# and zeroed afresh (docs/internals-io.md has the count). Keeping up to this much
# mapped reuses the pages; the peak RSS, reached while the chunks are live, does not
# change.
_TRIM_THRESHOLD = 32 << 20


def configure() -> bool:
    """The process-wide setting as every entry point applies it, once, before any
    thread starts: tune_heap() unless the `heap` fast path is switched off. True when
    applied."""
    from nestos_inst import fastpaths

    return fastpaths.enabled("heap") and tune_heap()


def tune_heap() -> bool:
    """One malloc arena, a fixed mmap threshold and trim threshold; True when applied.

    Decoder threads each get a glibc arena by default, and glibc raises its mmap
    threshold after the first freed MiB buffer, so freed buffers linger in several
    arenas and the peak RSS creeps up the longer a copy runs. With one arena and a
    fixed threshold, RSS tracks the bounded live data, and large buffers are reused
    instead of page-faulted in afresh. Process-wide: it must run before the first
    decoder thread allocates, hence once, at start-up. A no-op where libc is not
    glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_ARENA_MAX, 1) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and ok)
    except (OSError, AttributeError):
        return False
