"""Compressed test payloads built with the real tools (xz, gzip, zstd) and Python."""

from __future__ import annotations

import gzip
import lzma
import os
import random
import subprocess


def payload(size: int, seed: int = 1) -> bytes:
    """Mixed data: text-like runs, zeros and random bytes (realistic ratios, fast)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    out = bytearray()
    words = [b"boot", b"loader", b"nestos", b"ostree", b"\x00" * 64, b"kernel", b"\n"]
    while len(out) < size:
        kind = rng.randrange(3)
        n = rng.randrange(1, 20000)
        if kind == 0:
            out += b" ".join(rng.choice(words) for _ in range(n // 6 + 1))
        elif kind == 1:
            out += bytes(n)
        else:
            out += rng.randbytes(n)
    return bytes(out[:size])


def tool(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def xz_multiblock(data: bytes, block_size: int = 65536, check: str = "crc64") -> bytes:
    """A multi-threaded-style xz stream: every block header carries both sizes."""
    return tool(["xz", "-1", "-T2", f"--block-size={block_size}", f"--check={check}", "-c"], data)


def xz_single(data: bytes, check: int = lzma.CHECK_CRC64) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=check, preset=1)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def zst(data: bytes, *extra: str) -> bytes:
    return tool(["zstd", "-q", "-1", "-c", *extra], data)


def write(path: str | os.PathLike[str], data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
