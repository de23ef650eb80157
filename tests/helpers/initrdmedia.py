"""Build initrd test media with the real tools (GNU cpio, gzip, xz, zstd)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _run(argv: list[str], data: bytes | None = None, cwd: Path | None = None) -> bytes:
    return subprocess.run(argv, input=data, stdout=subprocess.PIPE, check=True, cwd=cwd).stdout


def gnu_cpio(files: Mapping[str, bytes], *, dirs: bool = True) -> bytes:
    """A newc archive made by `cpio -o -H newc` (512-byte block padding included).

    Members are created in a private temp dir; parent directories are archived too
    unless `dirs` is false.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names: set[str] = set()
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            names.add(name)
            if dirs:
                parts = name.split("/")[:-1]
                names.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        listing = "".join(f"{n}\n" for n in sorted(names)).encode()
        return _run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], listing, cwd=root)


def gzip(data: bytes) -> bytes:
    return _run(["gzip", "-c", "-n"], data)


def xz(data: bytes, check: str = "crc32") -> bytes:
    return _run(["xz", "-c", f"--check={check}"], data)


def zstd(data: bytes) -> bytes:
    return _run(["zstd", "-c", "-q"], data)


COMPRESSORS = {"raw": lambda d: d, "gzip": gzip, "xz": xz, "zstd": zstd}


def compat_like_image() -> bytes:
    """The layout of upstream's compressed.img: raw ‖ gzip ‖ xz ‖ zstd ‖ raw archives."""
    parts = []
    for prefix, kind in [
        ("uncompressed-1", "raw"),
        ("gzip", "gzip"),
        ("xz", "xz"),
        ("zstd", "zstd"),
        ("uncompressed-2", "raw"),
    ]:
        archive = gnu_cpio({f"{prefix}/hello": b"HELLO\n", f"{prefix}/world": b"WORLD\n"})
        parts.append(COMPRESSORS[kind](archive))
    return b"".join(parts)


def cpio_list(archive: bytes) -> list[str]:
    """Member names as GNU cpio lists them (archive must be uncompressed)."""
    return _run(["cpio", "--quiet", "-t"], archive).decode().splitlines()


def cpio_extract(archive: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["cpio", "--quiet", "-i", "-d", "--no-absolute-filenames"], archive, cwd=dest)


def bsdtar_list(data: bytes) -> list[str]:
    """bsdtar reads compressed archives directly."""
    return _run(["bsdtar", "-tf", "-"], data).decode().splitlines()


def xzcat(data: bytes) -> bytes:
    return _run(["xz", "-dc"], data)


def live_initramfs(
    marker: str = "etc/nestos-live-initramfs",
    features_path: str = "etc/nestos/features.json",
    features: bytes | None = b'{"installer-config": true, "live-initrd-network": true}\n',
    extra: Mapping[str, bytes] | None = None,
) -> bytes:
    """A small stand-in for a live initramfs: a gzip archive of system files followed
    by a zstd archive holding the live marker and features.json, 4-byte aligned as
    dracut does. Pass CoreOS names for a CoreOS-layout image; features=None omits it.
    """
    system = {"usr/lib/os-release": b'NAME="NestOS"\n', "init": b"#!/bin/sh\n"}
    live = {marker: b""}
    if features is not None:
        live[features_path] = features
    live.update(extra or {})
    first = gzip(gnu_cpio(system))
    first += b"\0" * ((4 - len(first) % 4) % 4)
    return first + zstd(gnu_cpio(live))
