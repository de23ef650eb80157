"""Keep peak RSS flat with the image size (issue 4: within 10% from 1 to 4 GiB)."""

from __future__ import annotations

import functools

_M_ARENA_MAX = -8  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
# Above the largest buffer a copy allocates (xz blocks of `xz -T` at -6 are 24 MiB):
# buffers are then reused from the heap instead of being mmap'd and faulted in afresh
# for every block, which cost 10-40% of install throughput (measured with
# bench_install: xz -T2 1.59x -> 1.80x, zstd 0.69x -> 1.26x of `decomp | dd`).
_MMAP_THRESHOLD = 32 << 20


@functools.cache
def tune_heap() -> None:
    """One malloc arena and a fixed mmap threshold.

    Decoder threads each get a glibc arena by default, and glibc raises its mmap
    threshold after the first freed MiB buffer, so freed buffers linger in several
    arenas and the peak RSS creeps up the longer a copy runs. With one arena and a
    fixed threshold, RSS tracks the bounded live data (+9% from 1 to 4 GiB measured).
    Process-wide, applied once, before the first decoder thread allocates; a no-op
    where libc is not glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass
