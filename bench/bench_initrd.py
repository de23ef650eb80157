"""Initrd reading vs `<decompressor> -dc | cpio -t`, and wrapping vs `xz -9 | cpio -o`.

Input: ~20 MiB of real files (the Python stdlib) archived by GNU cpio, compressed with
gzip, xz and zstd; cached in /var/tmp/nestos-bench-cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import compare
from nestos_inst.formats.initrd import read_initrd_stream, write_initrd

CACHE = Path("/var/tmp/nestos-bench-cache")
SOURCE = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
LIMIT = 20 << 20
TOOLS = {"gzip": ["gzip", "-6", "-n"], "xz": ["xz", "-6", "--check=crc32"], "zstd": ["zstd", "-q"]}


def _build() -> Path:
    raw = CACHE / "initrd-bench.cpio"
    if raw.exists():
        return raw
    CACHE.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    total = 0
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
            names.append(str(path.relative_to(SOURCE)))
            total += path.stat().st_size
            if total > LIMIT:
                break
    listing = "".join(f"{n}\n" for n in names).encode()
    tmp = raw.with_suffix(".tmp")
    with tmp.open("wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"],
            input=listing,
            stdout=out,
            cwd=SOURCE,
            check=True,
        )
    tmp.rename(raw)
    return raw


def _compressed(raw: Path, kind: str) -> Path:
    path = raw.with_suffix(f".cpio.{kind}")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with raw.open("rb") as src, tmp.open("wb") as out:
            subprocess.run(TOOLS[kind], stdin=src, stdout=out, check=True)
        tmp.rename(path)
    return path


def _pipeline(first: list[str], second: list[str], src: Path) -> None:
    with src.open("rb") as f, open(os.devnull, "wb") as null:
        one = subprocess.Popen(first, stdin=f, stdout=subprocess.PIPE)
        subprocess.run(second, stdin=one.stdout, stdout=null, check=True)
        assert one.stdout is not None
        one.stdout.close()
        one.wait()


def _ours(path: Path, patterns: list[str] | None) -> None:
    with path.open("rb") as f:
        read_initrd_stream(f, patterns)


def main() -> int:
    raw = _build()
    print(f"input: {raw.stat().st_size >> 20} MiB cpio of {SOURCE}")
    for kind in ["raw", "gzip", "xz", "zstd"]:
        path = raw if kind == "raw" else _compressed(raw, kind)
        decomp = ["cat"] if kind == "raw" else [kind, "-dc"]
        for label, patterns in [("list", ["config.ign"]), ("load all", None)]:
            compare(
                f"initrd {kind} {label} vs {decomp[0]} | cpio -t",
                lambda p=path, g=patterns: _timed(lambda: _ours(p, g)),  # type: ignore[misc]
                lambda d=decomp, p=path: _timed(  # type: ignore[misc]
                    lambda: _pipeline(d, ["cpio", "--quiet", "-t"], p)
                ),
                goal=None,
            )
    config = os.urandom(1 << 20).hex().encode()[: 1 << 20]
    (CACHE / "config.ign").write_bytes(config)

    def baseline_wrap() -> None:
        archive = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"], input=b"config.ign\n", cwd=CACHE,
            stdout=subprocess.PIPE, check=True,
        ).stdout  # fmt: skip
        subprocess.run(
            ["xz", "-9", "--check=crc32"], input=archive, stdout=subprocess.PIPE, check=True
        )

    compare(
        "initrd wrap 1 MiB config vs cpio -o | xz -9",
        lambda: _timed(lambda: write_initrd({"config.ign": config})),
        lambda: _timed(baseline_wrap),
        goal=None,
    )
    return 0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
