"""A fleet installing from one mirror: N concurrent `install --image-url` to N loop devices.

For N = 1, 2, 4, 8: N verified installs at once from one nginx on 127.0.0.1 (signed
image, throw-away key), each to its own loop device, against N concurrent unverified
`curl -s URL | xz -dc | dd of=DEV bs=1M conv=fsync`, in alternating pairs
(bench/common.py). Goal at every N: aggregate throughput >= 1.0x the baselines'.
Limits: peak RSS of every install <= 100 MiB; no failed request in nginx's log. Printed
for each N: aggregate MB/s of the image and CPU seconds per MB (ours and baseline), to
show how both grow with N, both as the process trees' rusage and as the whole
machine's busy time (bench/common.machine_cpu: it also counts the gpg that GPGME
starts detached, which rusage cannot see). Also, without a goal, the same installs
with --insecure against the same baseline: the share of the gap that is verification.
Needs root (losetup).

Environment: NESTOS_BENCH_FLEET_MIB (image size, default 128), NESTOS_BENCH_FLEET_N
(default 1,2,4,8), NESTOS_BENCH_FLEET_FORMAT (default xz), NESTOS_BENCH_RUNS.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

from bench.bench_url_install import base, ours
from bench.common import MIB, Sample, compare, info, limit
from bench.images import cold, loop_device
from bench.nginx import nginx
from bench.signing import publish, signing_workdir

RSS_LIMIT_MIB = 100


def together(jobs: list[Callable[[], Sample]]) -> Sample:
    """Run `jobs` at once; wall time of the slowest, the largest RSS, CPU summed."""
    results: list[Sample | BaseException] = [Sample(0.0)] * len(jobs)

    def run(i: int, job: Callable[[], Sample]) -> None:
        try:
            results[i] = job()
        except BaseException as exc:  # re-raised below, on the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    samples = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        samples.append(r)
    return Sample(wall, max(s.rss_kib for s in samples), sum(s.cpu for s in samples))


def _fleet(devs: list[str], one: Callable[[str], Sample]) -> Callable[[], Sample]:
    """A run of `one` on every device at once."""

    def run() -> Sample:
        return together([functools.partial(one, dev) for dev in devs])

    return run


@contextlib.contextmanager
def loop_devices(n: int, size: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(loop_device(size)) for _ in range(n)]


def main() -> int:
    if os.geteuid() != 0:
        print("bench_fleet needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_FLEET_MIB", "128"))
    counts = [int(n) for n in os.environ.get("NESTOS_BENCH_FLEET_N", "1,2,4,8").split(",")]
    fmt = os.environ.get("NESTOS_BENCH_FLEET_FORMAT", "xz")
    with signing_workdir("bench-fleet-") as (work, key):
        served = work / "served"
        served.mkdir()
        url_name = publish(fmt, size_mib, served, key)
        with nginx(served, work) as server:
            url = server.url(url_name)
            peak = 0.0
            for n in counts:
                with loop_devices(n, size_mib * MIB + MIB) as devs:
                    r = compare(
                        f"fleet N={n} {fmt}: installs (verified) vs curl | xz -dc | dd",
                        _fleet(devs, lambda dev: ours(url, dev, key.public)),
                        _fleet(devs, lambda dev: base(fmt, url, dev)),
                        goal=1.0,
                        note="aggregate throughput; gpg verification on, baseline none",
                        setup=lambda d=devs: cold(*d),  # type: ignore[misc]
                    )
                    peak = max(peak, r.ours_rss_mib)
                    total_mb = n * size_mib * MIB / 1e6
                    info(f"fleet N={n} ours aggregate", total_mb / r.ours, unit="MB/s")
                    info(
                        f"fleet N={n} baseline aggregate", total_mb / (r.baseline or 1), unit="MB/s"
                    )
                    info(f"fleet N={n} ours CPU per MB", r.ours_cpu / total_mb, unit="s/MB")
                    info(f"fleet N={n} baseline CPU per MB", r.baseline_cpu / total_mb, unit="s/MB")
                    # The process trees' rusage misses the gpg GPGME runs detached and
                    # the loop devices' kernel workers; the machine's figure has both.
                    info(
                        f"fleet N={n} ours machine CPU per MB",
                        r.ours_machine_cpu / total_mb,
                        unit="s/MB",
                    )
                    info(
                        f"fleet N={n} baseline machine CPU per MB",
                        r.baseline_machine_cpu / total_mb,
                        unit="s/MB",
                    )
                    # The same installs without verification (--insecure, no goal): what
                    # is left of the gap once gpg's work is taken out.
                    compare(
                        f"fleet N={n} {fmt}: installs --insecure vs curl | xz -dc | dd",
                        _fleet(devs, lambda dev: ours(url, dev, None)),
                        _fleet(devs, lambda dev: base(fmt, url, dev)),
                        goal=None,
                        note="no verification on either side (informational)",
                        setup=lambda d=devs: cold(*d),  # type: ignore[misc]
                    )
            limit("fleet peak RSS per install", peak, RSS_LIMIT_MIB, unit="MiB")
            limit("nginx failed requests (fleet)", server.failed(), 0, unit="requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
