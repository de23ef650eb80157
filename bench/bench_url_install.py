"""`install --image-url` with verification on, against the unverified pipeline a user types.

A signed image is served by nginx on 127.0.0.1 (bench/nginx.py) and installed to a loop
device, verification on (throw-away key), against `curl -s URL | <decoder> -dc | dd
of=DEV bs=1M conv=fsync` on the same device, in alternating pairs (bench/common.py).
Goals: single-block xz >= 1.0x, multi-block xz >= 1.6x (we decode on both cores),
gzip and zstd >= 1.0x. Peak RSS of an install <= 100 MiB; no failed request in
nginx's log. Needs root (losetup).

Environment: NESTOS_BENCH_URL_MIB (image size, default 512), NESTOS_BENCH_FORMATS
(default xz,xz-T2,gz,zst), NESTOS_BENCH_RUNS (pairs, default 5).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import MIB, Sample, compare, limit, python_env, run_pipeline
from bench.images import FORMATS, cold, dd_argv, loop_device
from bench.nginx import Nginx, nginx
from bench.signing import publish, signing_workdir
from tests.helpers.gpgkey import SigningKey

GOALS = {"xz": 1.0, "xz-T2": 1.6, "gz": 1.0, "zst": 1.0}
RSS_LIMIT_MIB = 100


def ours(url: str, dev: str, keyring: Path | None) -> Sample:
    """`install --image-url` verified with `keyring`; None installs with --insecure
    (no signature check), to measure what verification costs."""
    argv = [sys.executable, "-m", "nestos_inst", "install", dev, "--image-url", url]
    check = ["--keyring", str(keyring)] if keyring is not None else ["--insecure"]
    return run_pipeline([[*argv, *check]], env=python_env())


def base(fmt: str, url: str, dev: str) -> Sample:
    """`curl -s URL | <decoder> -dc | dd of=DEV bs=1M conv=fsync` (verifies nothing)."""
    return run_pipeline([["curl", "-sSf", url], FORMATS[fmt][2], dd_argv(dev)])


def main() -> int:
    if os.geteuid() != 0:
        print("bench_url_install needs root (losetup); skipped")
        return 0
    size_mib = int(os.environ.get("NESTOS_BENCH_URL_MIB", "512"))
    wanted = os.environ.get("NESTOS_BENCH_FORMATS", ",".join(GOALS)).split(",")
    with signing_workdir("bench-url-install-") as (work, key):
        served = work / "served"
        served.mkdir()
        names = {fmt: publish(fmt, size_mib, served, key) for fmt in wanted}
        with nginx(served, work) as server, loop_device(size_mib * MIB + MIB) as dev:
            _run(server, names, dev, key, size_mib)
    return 0


def _run(server: Nginx, names: dict[str, str], dev: str, key: SigningKey, size_mib: int) -> None:
    print(f"install --image-url of a {size_mib} MiB image from nginx to a loop device")
    base(next(iter(names)), server.url(next(iter(names.values()))), dev)  # allocate the loop file
    peak = 0.0
    for fmt, name in names.items():
        url = server.url(name)
        r = compare(
            f"install --image-url {fmt} (verified) vs curl | {FORMATS[fmt][2][0]} -dc | dd",
            lambda u=url: ours(u, dev, key.public),  # type: ignore[misc]
            lambda f=fmt, u=url: base(f, u, dev),  # type: ignore[misc]
            goal=GOALS[fmt],
            note="gpg verification on, baseline verifies nothing",
            setup=lambda: cold(dev),
        )
        peak = max(peak, r.ours_rss_mib)
    limit(f"install --image-url peak RSS ({size_mib} MiB)", peak, RSS_LIMIT_MIB, unit="MiB")
    limit("nginx failed requests (url install)", server.failed(), 0, unit="requests")


if __name__ == "__main__":
    sys.exit(main())
