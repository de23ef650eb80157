"""The asyncio driver bench/bench_concurrency.py measures keeps copy_to_fd's contract, so
the benchmark compares two ways of doing the same work: same bytes at the same places,
the write limit, and errors from either side (with their cause), after which its
executor threads are joined."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_concurrency import copy_async
from nestos_inst.errors import FormatError, NestosError
from nestos_inst.io.compress import open_decompressed, passthrough
from nestos_inst.io.pipeline import copy_to_fd
from tests.helpers import iomedia

MSG = "image is larger than the target"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    with iomedia.filled_target(tmp_path) as t:
        yield t


def _copy_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("copy")}


@pytest.mark.parametrize("kind", ["raw", "gz", "xz", "xz-multiblock", "zst"])
def test_same_bytes_as_copy_to_fd(target: tuple[Path, int], tmp_path: Path, kind: str) -> None:
    path, fd = target
    data = iomedia.payload(2_500_000)
    blob = {
        "raw": data,
        "gz": iomedia.gz(data),
        "xz": iomedia.xz_single(data),
        "xz-multiblock": iomedia.xz_multiblock(data),
        "zst": iomedia.zst(data),
    }[kind]
    before = _copy_threads()
    n = asyncio.run(copy_async(open_decompressed(io.BytesIO(blob)), fd, offset=12345))
    assert n == len(data)
    ours = path.read_bytes()
    other = tmp_path / "other.img"
    other.write_bytes(b"\xaa" * (8 << 20))
    ofd = os.open(other, os.O_RDWR)
    try:
        assert copy_to_fd(open_decompressed(io.BytesIO(blob)), ofd, offset=12345) == n
    finally:
        os.close(ofd)
    assert ours == other.read_bytes()
    assert _copy_threads() == before


@pytest.mark.parametrize("kind", ["raw", "xz-multiblock"])
def test_stops_exactly_at_the_limit(target: tuple[Path, int], kind: str) -> None:
    path, fd = target
    data = b"\x11" * (6 << 20)
    blob = data if kind == "raw" else iomedia.xz_multiblock(data)
    with pytest.raises(NestosError) as info:
        asyncio.run(
            copy_async(
                open_decompressed(io.BytesIO(blob)),
                fd,
                offset=1 << 20,
                limit=4 << 20,
                limit_message=MSG,
            )
        )
    assert str(info.value) == MSG
    disk = path.read_bytes()
    assert disk[1 << 20 : 4 << 20] == b"\x11" * (3 << 20)
    assert disk[4 << 20 :] == b"\xaa" * (4 << 20)


def test_reader_error_propagates_with_its_cause(target: tuple[Path, int]) -> None:
    _, fd = target
    before = _copy_threads()
    with pytest.raises(FormatError, match="decoding failed") as info:
        failing = passthrough(iomedia.FailingReader(300_000))
        asyncio.run(copy_async(failing, fd, offset=0, chunk=4096))
    assert isinstance(info.value.__cause__, ValueError)
    assert _copy_threads() == before


def test_writer_error_cancels_the_reader(tmp_path: Path) -> None:
    endless = iomedia.EndlessReader(65536)
    with iomedia.read_only_fd(tmp_path) as fd, pytest.raises(OSError) as info:
        asyncio.run(copy_async(passthrough(endless), fd, offset=0, chunk=65536, depth=2))
    assert info.value.errno is not None
    assert endless.reads < 64  # the reader stopped soon after the failed write
