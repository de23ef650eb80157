"""Write limits and the copy pipeline (a reader thread, or inline for decoders that work ahead)."""

from __future__ import annotations

import io
import lzma
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.io.compress import Decoder, open_decompressed, passthrough
from nestos_inst.io.limit import LimitReader, LimitWriter, WriteLimit, collision_message
from nestos_inst.io.pipeline import ALIGN, copy_to_fd, read_exact
from tests.helpers import iomedia

MSG = collision_message('partition 4 ("bovik")', 4194304)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    with iomedia.filled_target(tmp_path) as t:
        yield t


def test_collision_message() -> None:
    assert MSG == 'collision with partition 4 ("bovik") at offset 4194304'
    assert collision_message("foo", 10) == "collision with foo at offset 10"


def test_limit_writer_stops_exactly() -> None:
    sink = io.BytesIO()
    w = LimitWriter(sink, WriteLimit(10, collision_message("foo", 10)))
    assert w.write(b"12345") == 5
    assert w.write(b"6789abc") == 5  # cut short at the limit
    assert sink.getvalue() == b"123456789a"
    with pytest.raises(NestosError, match=r"^collision with foo at offset 10$"):
        w.write(b"x")
    assert w.write(b"") == 0
    assert sink.getvalue() == b"123456789a"


def test_limit_reader_stops_exactly() -> None:
    limit = WriteLimit(10, collision_message("foo", 10))
    r = LimitReader(io.BytesIO(b"0123456789"), limit)
    assert r.read() == b"0123456789"  # exactly at the limit: a clean EOF
    assert r.read(5) == b""
    r = LimitReader(io.BytesIO(b"0123456789X"), limit)
    assert r.read(8) == b"01234567"
    assert r.read(8) == b"89"
    with pytest.raises(NestosError, match=r"^collision with foo at offset 10$"):
        r.read(8)


def test_copy_round_trip(target: tuple[Path, int]) -> None:
    path, fd = target
    data = iomedia.payload(3_000_000)
    seen: list[int] = []
    n = copy_to_fd(
        passthrough(io.BytesIO(data)), fd, offset=1 << 20, progress_cb=seen.append, chunk=65536
    )
    assert n == len(data) == sum(seen)
    disk = path.read_bytes()
    assert disk[: 1 << 20] == b"\xaa" * (1 << 20)
    assert disk[1 << 20 : (1 << 20) + len(data)] == data
    assert disk[(1 << 20) + len(data) :] == b"\xaa" * (len(disk) - (1 << 20) - len(data))


def test_copy_from_decompressor(target: tuple[Path, int]) -> None:
    path, fd = target
    data = iomedia.payload(2_000_000)
    for blob in (iomedia.gz(data), iomedia.xz_multiblock(data), iomedia.zst(data)):
        n = copy_to_fd(open_decompressed(io.BytesIO(blob)), fd, offset=0)
        assert n == len(data)
        assert path.read_bytes()[: len(data)] == data


def test_copy_stops_exactly_at_limit(target: tuple[Path, int]) -> None:
    path, fd = target
    data = b"\x11" * (6 << 20)
    with pytest.raises(NestosError) as info:
        copy_to_fd(
            passthrough(io.BytesIO(data)), fd, offset=1 << 20, limit=4 << 20, limit_message=MSG
        )
    assert str(info.value) == MSG
    disk = path.read_bytes()
    assert disk[: 1 << 20] == b"\xaa" * (1 << 20)
    assert disk[1 << 20 : 4 << 20] == b"\x11" * (3 << 20)
    assert disk[4 << 20 :] == b"\xaa" * (4 << 20)  # the saved partition is intact


def test_copy_up_to_limit_is_fine(target: tuple[Path, int]) -> None:
    _, fd = target
    n = copy_to_fd(
        passthrough(io.BytesIO(b"\1" * (3 << 20))),
        fd,
        offset=1 << 20,
        limit=4 << 20,
        limit_message=MSG,
        chunk=1 << 19,
    )
    assert n == 3 << 20


def test_reader_error_propagates_with_chain(target: tuple[Path, int]) -> None:
    _, fd = target
    with pytest.raises(FormatError, match="decoding failed") as info:
        copy_to_fd(passthrough(iomedia.FailingReader(300_000)), fd, offset=0, chunk=4096)
    assert isinstance(info.value.__cause__, ValueError)


def test_truncated_stream_error_propagates(target: tuple[Path, int]) -> None:
    _, fd = target
    blob = iomedia.xz_multiblock(iomedia.payload(1_000_000))
    with pytest.raises(FormatError, match="truncated"):
        copy_to_fd(open_decompressed(io.BytesIO(blob[:-100])), fd, offset=0)


def test_writer_error_propagates_and_stops_reader(tmp_path: Path) -> None:
    endless = iomedia.EndlessReader(1024)
    with iomedia.read_only_fd(tmp_path) as fd, pytest.raises(OSError) as info:
        copy_to_fd(passthrough(endless), fd, offset=0, chunk=1024, depth=2)
    assert info.value.errno is not None
    # The first write comes once an aligned run is complete; after it fails the
    # reader is stopped, not left running.
    assert endless.reads < ALIGN // 1024 + 50


def test_read_exact() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.b = io.BytesIO(b"abcdefghij")

        def readable(self) -> bool:
            return True

        def read(self, size: int | None = -1) -> bytes:
            return self.b.read(1)

    assert read_exact(Trickle(), 4) == b"abcd"  # type: ignore[arg-type]
    assert read_exact(io.BytesIO(b"ab"), 4) == b"ab"


@pytest.mark.root
def test_copy_to_loop_device_with_limit(tmp_path: Path) -> None:
    """The real target kind: a loop device; the protected region stays intact."""
    from tests.helpers.loop import loop_device

    img = tmp_path / "disk.img"
    img.write_bytes(b"\xbb" * (8 << 20))
    data = iomedia.payload(5 << 20, seed=5)
    blob = iomedia.xz_multiblock(data, block_size=1 << 20)
    src_path = tmp_path / "image.xz"
    src_path.write_bytes(blob)
    with loop_device(img, partitions=False) as dev:
        fd = os.open(dev, os.O_WRONLY)
        try:
            with open(src_path, "rb") as src, pytest.raises(NestosError) as info:
                copy_to_fd(
                    open_decompressed(src),
                    fd,
                    offset=0,
                    limit=4 << 20,
                    limit_message=MSG,
                    chunk=1 << 16,
                )
            os.fsync(fd)
            assert str(info.value) == MSG
            with open(src_path, "rb") as src:
                n = copy_to_fd(
                    open_decompressed(src), fd, offset=1 << 20, limit=6 << 20, limit_message=MSG
                )
            os.fsync(fd)
        finally:
            os.close(fd)
    assert n == len(data)
    disk = img.read_bytes()
    assert disk[1 << 20 : 6 << 20] == data
    assert disk[6 << 20 :] == b"\xbb" * (2 << 20)
    assert src_path.read_bytes() == blob  # the input is never modified


@pytest.mark.parametrize("fmt", ["gz", "xz-multi", "zst", "xz"])
def test_memory_stays_bounded(fmt: str) -> None:
    """Python-level allocations while copying 96 MiB stay far below the data size."""
    import tracemalloc

    size = 96 << 20
    data = bytes(size)
    if fmt == "gz":
        blob = iomedia.gz(data)
    elif fmt == "xz-multi":
        blob = iomedia.xz_multiblock(data, block_size=3 << 20)
    elif fmt == "zst":
        blob = iomedia.zst(data)
    else:
        blob = iomedia.xz_single(data)
    del data
    fd = os.open(os.devnull, os.O_WRONLY)
    tracemalloc.start()
    try:
        n = copy_to_fd(open_decompressed(io.BytesIO(blob)), fd, offset=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        os.close(fd)
    assert n == size
    assert peak < 40 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize("offset", [0, 1 << 20, 12345])
@pytest.mark.parametrize(
    "sizes", [[1], [4095, 1, 70000], [ALIGN], [ALIGN - 1, ALIGN + 1], [3 << 20]]
)
def test_odd_pieces_land_intact(tmp_path: Path, offset: int, sizes: list[int]) -> None:
    """Pieces of any length (written in aligned runs, tails carried over) land byte-exact."""
    data = iomedia.payload(700_000 if sizes != [1] else 150_000, seed=len(sizes))
    path = tmp_path / "t"
    path.write_bytes(b"\xaa" * (offset + len(data) + 4096))
    fd = os.open(path, os.O_WRONLY)
    try:
        seen: list[int] = []
        n = copy_to_fd(
            passthrough(iomedia.Pieces(data, sizes)), fd, offset=offset, progress_cb=seen.append
        )
    finally:
        os.close(fd)
    assert n == len(data) == sum(seen)
    disk = path.read_bytes()
    assert disk[offset : offset + len(data)] == data
    assert disk[:offset] == b"\xaa" * offset
    assert disk[offset + len(data) :] == b"\xaa" * 4096


def test_decoder_working_ahead_is_read_on_the_writing_thread(target: tuple[Path, int]) -> None:
    """The parallel xz decoder already decodes on threads of its own: copy_to_fd reads
    it on the calling thread (no copy-reader hand-over); single-thread decoders still
    get a reader thread. Bytes land the same either way."""
    path, fd = target
    data = iomedia.payload(3_000_000)
    for blob, ahead in ((iomedia.xz_multiblock(data), True), (_xz(data), False)):
        dec = open_decompressed(io.BytesIO(blob))
        assert dec.decodes_ahead() is ahead
        seen: set[str] = set()
        stream = _Watched(dec, seen)
        assert copy_to_fd(stream, fd, offset=4096) == len(data)
        assert seen == ({threading.current_thread().name} if ahead else {"copy-reader"})
        with open(path, "rb") as f:
            f.seek(4096)
            assert f.read(len(data)) == data


class _Watched:
    """A Decoder's stream, noting the thread of every read1."""

    def __init__(self, dec: Decoder, seen: set[str]) -> None:
        self._dec = dec
        self._seen = seen

    def decodes_ahead(self) -> bool:
        return self._dec.decodes_ahead()

    def read(self, size: int = -1, /) -> bytes:
        return self._dec.read(size)

    def read1(self, size: int = -1, /) -> bytes:
        self._seen.add(threading.current_thread().name)
        return self._dec.read1(size)

    def finish(self) -> None:
        self._dec.finish()

    def close(self) -> None:
        self._dec.close()


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)
