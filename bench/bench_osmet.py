"""osmet: packed size vs the xz-compressed full image, and rebuild+write throughput vs
`xz -dc full.raw.xz | dd of=LOOP bs=1M conv=fsync`, side by side in the same run.

Input: a real OSTree metal image (tests/helpers/ostreeimage.py) whose root holds at
least 200 MiB of objects (binary-like data xz halves), cached with its .xz in
/var/tmp/nestos-bench-cache keyed by recipe. Ours: `pack osmet` (default preset 9),
then `dev extract osmet` and `install --offline` onto a loop device from the image's
own repo. Goals: size ratio <= 0.1, throughput ratio >= 1.0. Needs root.

Environment: NESTOS_BENCH_OSMET_PAYLOAD_MIB (default 210), NESTOS_BENCH_RUNS (pairs,
default 5), NESTOS_BENCH_XZ_PRESET for the baseline image (default 1: building a
-6 baseline of this data takes over 20 minutes here; see docs/osmet.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import compare, info, limit
from tests.helpers.loop import loop_device, mounted
from tests.helpers.ostreeimage import MIB, build_ostree_image

CACHE = Path("/var/tmp/nestos-bench-cache")
SIZE_GOAL = 0.1
SPEED_GOAL = 1.0


def _prepare(payload_mib: int, preset: int) -> tuple[Path, Path, dict[str, object]]:
    work = CACHE / f"osmet-v1-p{payload_mib}"
    facts_path = work / "facts.json"
    img = work / "disk.img"
    xz = work / f"disk.img.{preset}.xz"
    if not facts_path.exists() or not img.exists():
        shutil.rmtree(work, ignore_errors=True)
        print(f"building OSTree metal image with {payload_mib} MiB of payload...", flush=True)
        t0 = time.monotonic()
        image = build_ostree_image(
            work, payload=payload_mib * MIB, kernel_size=12 * MIB + 4321, decoy=False, seed=1
        )
        facts = {"sha256": image.sha256, "size": image.size, "objects": image.objects_bytes}
        facts_path.write_text(json.dumps(facts))
        print(f"  built in {time.monotonic() - t0:.0f} s", flush=True)
    if not xz.exists():
        print(f"compressing baseline with xz -{preset} -T2...", flush=True)
        tmp = xz.with_suffix(".partial")
        with img.open("rb") as src, tmp.open("wb") as dst:
            subprocess.run(["xz", f"-{preset}", "-T2", "-c"], stdin=src, stdout=dst, check=True)
        tmp.replace(xz)
    facts = json.loads(facts_path.read_text())
    return img, xz, facts


def _timed(argv: list[str], **kw: object) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, **kw)  # type: ignore[call-overload]
    return time.monotonic() - t0


def _baseline(xz: Path, dev: str) -> float:
    t0 = time.monotonic()
    dec = subprocess.Popen(["xz", "-dc", str(xz)], stdout=subprocess.PIPE)
    subprocess.run(
        ["dd", f"of={dev}", "bs=1M", "conv=fsync", "status=none"],
        stdin=dec.stdout,
        check=True,
    )
    assert dec.stdout is not None
    dec.stdout.close()
    if dec.wait() != 0:
        raise RuntimeError("xz -dc failed")
    return time.monotonic() - t0


def main() -> int:
    if os.geteuid() != 0:
        print("bench_osmet needs root (loop devices, mounts); skipped")
        return 0
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    payload = int(os.environ.get("NESTOS_BENCH_OSMET_PAYLOAD_MIB", "210"))
    preset = int(os.environ.get("NESTOS_BENCH_XZ_PRESET", "1"))
    img, xz, facts = _prepare(payload, preset)
    size = int(str(facts["size"]))
    cli = [sys.executable, "-m", "nestos_inst"]
    with tempfile.TemporaryDirectory(prefix="bench-osmet-", dir="/var/tmp") as tmpdir:
        tmp = Path(tmpdir)
        osmet = tmp / "osmet" / "metal.osmet"
        osmet.parent.mkdir()
        with loop_device(img) as src:
            pack_secs = _timed(
                [
                    *cli,
                    "pack",
                    "osmet",
                    "--output",
                    str(osmet),
                    "--checksum",
                    str(facts["sha256"]),
                    "--description",
                    "bench",
                    src,
                ]
            )
        packed, full = osmet.stat().st_size, xz.stat().st_size
        print(f"image {size / MIB:.0f} MiB, objects {int(str(facts['objects'])) / MIB:.0f} MiB")
        info("pack osmet (preset 9)", pack_secs, unit="s")
        limit(
            f"osmet size / xz -{preset} full image",
            packed / full,
            SIZE_GOAL,
            unit="x",
            note=f"osmet {packed / MIB:.2f} MiB, xz {full / MIB:.1f} MiB",
        )
        target = tmp / "target.img"
        with target.open("wb") as f:
            f.truncate(size + MIB)
        with (
            loop_device(img) as src,
            mounted(f"{src}p3", options="ro,norecovery") as root,
            loop_device(target, partitions=False) as dev,
        ):
            repo = root / "ostree" / "repo"
            extract = [*cli, "dev", "extract", "osmet", "--osmet", str(osmet), str(repo), dev]
            install = [
                *cli, "install", "--offline", "--osmet-dir", str(osmet.parent),
                "--ostree-repo", str(repo), dev,
            ]  # fmt: skip
            for name, argv in (("dev extract osmet", extract), ("install --offline", install)):
                compare(
                    f"{name} vs xz -dc | dd",
                    lambda a=argv: _timed(a),  # type: ignore[misc]
                    lambda: _baseline(xz, dev),
                    goal=SPEED_GOAL,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
