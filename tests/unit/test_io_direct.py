"""Direct (O_DIRECT) writes to block devices, the fast path `direct-io`, on real loop
devices with 512- and 4096-byte sectors (io/pipeline.py: DirectWriter, copy_to_fd).

What O_DIRECT is used for is observed without timing: the copy's progress callback
runs right after each write, when the fd's status flags say which route wrote it."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.io.compress import open_decompressed, passthrough
from nestos_inst.io.limit import collision_message
from nestos_inst.io.pipeline import DIRECT_BUFFER, DirectWriter, copy_to_fd, direct_block
from nestos_inst.io.stream import DecodesInto
from tests.helpers import iomedia
from tests.helpers.loop import loop_device, mounted

pytestmark = pytest.mark.root

MiB = 1 << 20
FILL = b"\xbb"  # what the disk held before: untouched bytes show
MSG = collision_message('partition 5 ("data")', 12 * MiB)


@contextlib.contextmanager
def disk(tmp_path: Path, sector_size: int, size: int = 16 * MiB) -> Iterator[tuple[Path, int]]:
    """A loop device over a file of FILL bytes, open read-write: (backing file, fd)."""
    img = tmp_path / f"disk-{sector_size}.img"
    img.write_bytes(FILL * size)
    with loop_device(img, sector_size=sector_size, partitions=False) as dev:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        try:
            yield img, fd
        finally:
            os.close(fd)


class Routes:
    """Progress callback noting, per write, whether the fd had O_DIRECT at the time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.direct: list[int] = []
        self.buffered: list[int] = []

    def __call__(self, n: int) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        (self.direct if flags & os.O_DIRECT else self.buffered).append(n)

    @property
    def total(self) -> int:
        return sum(self.direct) + sum(self.buffered)


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize(
    "length",
    [
        9 * MiB + 1000,  # ends inside a sector
        9 * MiB + 3 * 512,  # whole 512-byte sectors, not a multiple of 4096
        2 * DIRECT_BUFFER,  # whole buffers, nothing left for flush()
        5000,  # less than one buffer
    ],
)
def test_lands_intact_and_nothing_past_the_end(
    tmp_path: Path, sector_size: int, length: int
) -> None:
    """Bytes land exactly; the bytes after the image (a saved partition) keep theirs;
    whole blocks go direct, only the end that is not a whole block goes buffered; the
    fd gets its flags back."""
    data = iomedia.payload(length, seed=length % 97)
    with disk(tmp_path, sector_size) as (img, fd):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert direct_block(fd, MiB) == sector_size
        routes = Routes(fd)
        src = passthrough(iomedia.Pieces(data, [4095, 1, 70000, 3 * MiB + 17]))
        n = copy_to_fd(src, fd, offset=MiB, progress_cb=routes)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
        os.fsync(fd)
    assert n == length == routes.total
    tail = length % sector_size
    assert sum(routes.buffered) == tail
    assert all(d % sector_size == 0 and d <= DIRECT_BUFFER for d in routes.direct)
    with open(img, "rb") as f:
        disk_bytes = f.read()
    assert disk_bytes[:MiB] == FILL * MiB
    assert disk_bytes[MiB : MiB + length] == data
    assert disk_bytes[MiB + length :] == FILL * (len(disk_bytes) - MiB - length)


@pytest.mark.parametrize("fmt", ["zst", "xz-multi", "gz"])
def test_same_bytes_with_the_trick_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """NESTOS_INSTALLER_FAST_PATHS=none: the buffered route, the same disk bytes."""
    data = iomedia.payload(7 * MiB + 4321, seed=7)
    if fmt == "zst":
        blob = iomedia.zst(data)
    elif fmt == "gz":
        blob = iomedia.gz(data)
    else:
        blob = iomedia.xz_multiblock(data)
    results = {}
    for mode in ("all", "none"):
        monkeypatch.setenv("NESTOS_INSTALLER_FAST_PATHS", mode)
        with disk(tmp_path, 4096) as (img, fd):
            routes = Routes(fd)
            copy_to_fd(open_decompressed(io.BytesIO(blob)), fd, offset=MiB, progress_cb=routes)
            os.fsync(fd)
        assert routes.total == len(data)
        assert bool(routes.direct) is (mode == "all")
        results[mode] = img.read_bytes()
        img.unlink()
    assert results["all"] == results["none"]
    assert results["all"][MiB : MiB + len(data)] == data


def test_limit_stops_exactly_and_gives_the_flags_back(tmp_path: Path) -> None:
    """The write limit (a saved partition) is kept to the byte with direct writes too,
    and a failed copy still gives the fd its flags back (the wipe that follows writes
    small unaligned pieces, which O_DIRECT would refuse)."""
    data = iomedia.payload(14 * MiB, seed=3)
    with disk(tmp_path, 512) as (img, fd):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        routes = Routes(fd)
        with pytest.raises(NestosError) as info:
            copy_to_fd(
                passthrough(iomedia.Pieces(data, [MiB + 1])),
                fd,
                offset=MiB,
                limit=12 * MiB + 100,
                limit_message=MSG,
                progress_cb=routes,
            )
        assert str(info.value) == MSG
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
        assert routes.direct and sum(routes.buffered) == 100
        os.pwrite(fd, b"small", 3)  # buffered again: an unaligned write works
        os.fsync(fd)
    disk_bytes = img.read_bytes()
    assert disk_bytes[MiB : 12 * MiB + 100] == data[: 11 * MiB + 100]
    assert disk_bytes[12 * MiB + 100 :] == FILL * (4 * MiB - 100)


def test_no_stale_page_cache_after_direct_writes(tmp_path: Path) -> None:
    """Readers through the page cache see the new bytes: pages cached before the copy
    (a probe read the old disk) and the buffered first MiB written after it."""
    data = iomedia.payload(10 * MiB + 700, seed=11)
    with disk(tmp_path, 4096) as (_, fd):
        assert os.pread(fd, 16 * MiB, 0) == FILL * 16 * MiB  # old content now cached
        copy_to_fd(passthrough(io.BytesIO(data)), fd, offset=MiB)
        os.pwrite(fd, b"\x01" * MiB, 0)  # the deferred first MiB, buffered
        os.fsync(fd)
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        try:
            seen = os.pread(reader, 16 * MiB, 0)
        finally:
            os.close(reader)
    assert seen[:MiB] == b"\x01" * MiB
    assert seen[MiB : MiB + len(data)] == data
    assert seen[MiB + len(data) :] == FILL * (15 * MiB - len(data))


def test_mounted_filesystem_sees_the_image(tmp_path: Path) -> None:
    """What install does next: mount a filesystem from the freshly written device (after
    an older filesystem was mounted there, so its blocks were cached)."""
    import subprocess

    old, new = tmp_path / "old.fs", tmp_path / "new.fs"
    for path, text in ((old, "old\n"), (new, "new\n")):
        tree = tmp_path / f"tree-{path.stem}"
        tree.mkdir()
        (tree / "file.txt").write_text(text)
        with open(path, "wb") as f:
            f.truncate(8 * MiB)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), str(path)],
            check=True,
            capture_output=True,
        )
    img = tmp_path / "disk.img"
    img.write_bytes(old.read_bytes())
    with loop_device(img, sector_size=4096, partitions=False) as dev:
        with mounted(dev, options="ro") as where:
            assert (where / "file.txt").read_text() == "old\n"
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        try:
            with open(new, "rb") as src:
                copy_to_fd(passthrough(src), fd, offset=0)
            os.fsync(fd)
        finally:
            os.close(fd)
        with mounted(dev, options="ro") as where:
            assert (where / "file.txt").read_text() == "new\n"


@pytest.mark.parametrize("where", ["tmp_path", "/dev/shm"])
def test_regular_files_stay_buffered(tmp_path: Path, where: str) -> None:
    """A regular file (on disk or tmpfs) is its own page cache: no direct writes."""
    base = tmp_path if where == "tmp_path" else Path(where)
    path = base / f"nestos-direct-test-{os.getpid()}"
    data = iomedia.payload(5 * MiB + 3, seed=5)
    try:
        path.write_bytes(FILL * (8 * MiB))
        fd = os.open(path, os.O_RDWR)
        try:
            assert direct_block(fd, MiB) is None
            routes = Routes(fd)
            copy_to_fd(passthrough(io.BytesIO(data)), fd, offset=MiB, progress_cb=routes)
        finally:
            os.close(fd)
        assert routes.direct == [] and routes.total == len(data)
        assert path.read_bytes()[MiB : MiB + len(data)] == data
    finally:
        path.unlink(missing_ok=True)


def test_refused_o_direct_goes_buffered() -> None:
    """A file that refuses O_DIRECT (EINVAL from fcntl; /dev/null here): buffered."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        out = DirectWriter(fd, 0, None, block=512)
        try:
            assert not out.direct
            out.add(b"x" * (DIRECT_BUFFER + 5))
            out.flush()
        finally:
            out.close()
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        os.close(fd)


def test_einval_on_a_direct_write_goes_buffered(tmp_path: Path) -> None:
    """A device wanting more alignment than assumed refuses the write (EINVAL): told
    512-byte blocks, a 4096-byte-sector device refuses the last 512-aligned write; the
    writer goes on buffered, and the bytes are the same."""
    data = iomedia.payload(DIRECT_BUFFER + 3 * 512, seed=9)
    with disk(tmp_path, 4096) as (img, fd):
        routes = Routes(fd)
        out = DirectWriter(fd, MiB, routes, block=512)
        try:
            out.add(data)
            assert out.direct  # the whole buffer went out direct
            out.flush()
            assert not out.direct
        finally:
            out.close()
        os.fsync(fd)
    assert routes.direct == [DIRECT_BUFFER] and routes.buffered == [3 * 512]
    disk_bytes = img.read_bytes()
    assert disk_bytes[MiB : MiB + len(data)] == data
    assert disk_bytes[MiB + len(data) :] == FILL * (15 * MiB - len(data))


def test_unaligned_start_stays_buffered(tmp_path: Path) -> None:
    with disk(tmp_path, 512) as (_, fd):
        assert direct_block(fd, 12345) is None
        assert direct_block(fd, 4096) == 512


class Watched:
    """A zstd decoder's stream, counting which way it is read (read1: pieces copied
    into the writer's buffer; readinto1: the buffer filled by the decoder itself)."""

    def __init__(self, blob: bytes) -> None:
        dec = open_decompressed(io.BytesIO(blob))
        assert isinstance(dec, DecodesInto)
        self._dec = dec
        self.calls: collections.Counter[str] = collections.Counter()
        self.threads: set[str] = set()

    def read(self, size: int = -1, /) -> bytes:
        return self._dec.read(size)

    def read1(self, size: int = -1, /) -> bytes:
        self.calls["read1"] += 1
        return self._dec.read1(size)

    def readinto1(self, b: memoryview, /) -> int:
        self.calls["readinto1"] += 1
        self.threads.add(threading.current_thread().name)
        return self._dec.readinto1(b)

    def finish(self) -> None:
        self._dec.finish()

    def close(self) -> None:
        self._dec.close()


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("mode", ["all", "none"])
def test_zstd_fills_the_direct_buffers_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sector_size: int, mode: str
) -> None:
    """zstd decodes straight into the direct writer's buffers (on the copy-reader
    thread), after a first read() as write_image does; with the trick off it is read
    in pieces as before. The same bytes either way, nothing past the end."""
    monkeypatch.setenv("NESTOS_INSTALLER_FAST_PATHS", mode)
    data = iomedia.payload(2 * DIRECT_BUFFER + 5 * MiB + 777, seed=21)
    stream = Watched(iomedia.zst(data))
    head = stream.read(MiB)
    with disk(tmp_path, sector_size, size=24 * MiB) as (img, fd):
        routes = Routes(fd)
        n = copy_to_fd(stream, fd, offset=MiB, progress_cb=routes)
        stream.finish()
        os.fsync(fd)
    assert n == len(data) - MiB == routes.total
    if mode == "all":
        assert set(stream.calls) == {"readinto1"} and stream.threads == {"copy-reader"}
        assert routes.direct[:2] == [DIRECT_BUFFER, DIRECT_BUFFER]
        assert sum(routes.buffered) == len(data) % sector_size
    else:
        assert set(stream.calls) == {"read1"} and routes.direct == []
    disk_bytes = img.read_bytes()
    assert head == data[:MiB]
    assert disk_bytes[MiB : MiB + n] == data[MiB:]
    assert disk_bytes[MiB + n :] == FILL * (23 * MiB - n)


def test_zstd_fill_path_keeps_the_limit_and_stops_its_thread(tmp_path: Path) -> None:
    """The limit falls inside a filled buffer: the bytes below it are written, the
    message is the limit's, the filling thread is gone, the fd has its flags back."""
    data = iomedia.payload(14 * MiB, seed=4)
    stream = Watched(iomedia.zst(data))
    with disk(tmp_path, 4096) as (img, fd):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        with pytest.raises(NestosError) as info:
            copy_to_fd(stream, fd, offset=MiB, limit=12 * MiB + 100, limit_message=MSG)
        assert str(info.value) == MSG
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
        assert "copy-reader" not in {t.name for t in threading.enumerate()}
        assert stream.calls["readinto1"] and not stream.calls["read1"]
        os.fsync(fd)
    disk_bytes = img.read_bytes()
    assert disk_bytes[MiB : 12 * MiB + 100] == data[: 11 * MiB + 100]
    assert disk_bytes[12 * MiB + 100 :] == FILL * (4 * MiB - 100)


def test_zstd_fill_path_decoder_error_propagates(tmp_path: Path) -> None:
    """A damaged zstd stream fails on the filling thread: the decoder's error reaches
    the caller with its chain, and what was decoded before stays written."""
    data = iomedia.payload(9 * MiB, seed=8)
    blob = iomedia.zst(data)
    stream = Watched(blob[: len(blob) // 2])
    with disk(tmp_path, 512) as (_, fd), pytest.raises(FormatError, match="truncated"):
        copy_to_fd(stream, fd, offset=MiB)
    assert stream.threads == {"copy-reader"}
