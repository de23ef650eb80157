"""The kernel path of plain-HTTP downloads: splice/tee fan-out, hand-over, resume.

A real server on 127.0.0.1, real pipes, real files. Every case checks the bytes
that reached the file and every tap, because a fast path that loses or reorders a
byte is worse than none.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.errors import NestosError, chain
from nestos_inst.io import kernel
from nestos_inst.net import http, plain
from nestos_inst.sources import VerifiedReader
from tests.helpers.httpserver import Server, http_server

DATA = os.urandom(5 << 20) + b"tail"

pytestmark = pytest.mark.skipif(
    not kernel.zero_copy_available(), reason="splice()/tee() not available on this system"
)


@pytest.fixture
def server() -> Iterator[Server]:
    with http_server() as srv:
        yield srv


class PipeReader:
    """Collects what a tap receives, like GPG reading its pipe (optionally slowly)."""

    def __init__(self, *, size: int | None = None, stop_after: int | None = None) -> None:
        self._r, self.fd = os.pipe()
        if size is not None:
            import fcntl

            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, size)
        self.data = bytearray()
        self._stop_after = stop_after
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while chunk := os.read(self._r, 4096):
            self.data += chunk
            if self._stop_after is not None and len(self.data) >= self._stop_after:
                break
        os.close(self._r)

    def finish(self) -> bytes:
        os.close(self.fd)
        self._thread.join()
        return bytes(self.data)


def feed(fan: kernel.Fanout, data: bytes) -> None:
    """Push `data` through `fan` as the kernel path does (inlet, then push), then close."""
    with fan:
        view = memoryview(data)
        while view:
            n = os.write(fan.inlet, view[: fan.size])
            fan.push(n)
            view = view[n:]


class Moves:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.first = 0
        self.kernel = 0

    def on_first(self, data: bytes) -> None:
        self.first += len(data)
        os.write(self.fd, data)

    def on_moved(self, n: int) -> None:
        self.kernel += n


def fetch_into(
    server: Server, path: str, out: Path, taps: list[PipeReader], retries: int = 0
) -> tuple[bool, Moves]:
    """move_to() then read1() for whatever it left, as VerifiedReader.copy_into does."""

    async def no_sleep(delay: float) -> None:
        return None

    resp = http.fetch(server.url(path), retries=retries, sleep=no_sleep)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        moves = Moves(fd)
        done = resp.move_to(fd, [t.fd for t in taps], moves.on_first, moves.on_moved)
        while data := resp.read1(1 << 20):
            os.write(fd, data)
            for tap in taps:
                os.write(tap.fd, data)
        return done, moves
    finally:
        os.close(fd)
        resp.close()


def test_kernel_moves_the_body(server: Server, tmp_path: Path) -> None:
    server.add("/img", DATA)
    taps = [PipeReader(), PipeReader()]
    done, moves = fetch_into(server, "/img", tmp_path / "out", taps)
    assert done
    assert moves.kernel > len(DATA) // 2  # most of it never entered Python
    assert moves.first + moves.kernel == len(DATA)
    assert (tmp_path / "out").read_bytes() == DATA
    # The first chunk went through Python (on_first); the taps got the kernel's part.
    assert [t.finish() for t in taps] == [DATA[moves.first :]] * 2


def test_slow_narrow_tap_sees_every_byte_in_order(tmp_path: Path) -> None:
    """A tap that takes less than offered (4 KiB pipe) must not shift the others."""
    narrow, wide = PipeReader(size=4096), PipeReader()
    sink = os.open(tmp_path / "sink", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        feed(kernel.Fanout([narrow.fd, wide.fd], sink), DATA)
    finally:
        os.close(sink)
    assert narrow.finish() == DATA
    assert wide.finish() == DATA
    assert (tmp_path / "sink").read_bytes() == DATA


def test_sink_refusing_splice_gets_copies(tmp_path: Path) -> None:
    """splice() into an O_APPEND file fails with EINVAL, like some file systems."""
    tap = PipeReader()
    sink = os.open(tmp_path / "sink", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        feed(kernel.Fanout([tap.fd], sink), DATA)
    finally:
        os.close(sink)
    assert tap.finish() == DATA
    assert (tmp_path / "sink").read_bytes() == DATA


def test_tap_whose_reader_left_is_dropped(server: Server, tmp_path: Path) -> None:
    server.add("/img", DATA)
    quitter = PipeReader(stop_after=100_000)
    done, _ = fetch_into(server, "/img", tmp_path / "out", [quitter])
    assert done
    assert (tmp_path / "out").read_bytes() == DATA


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "range-ignored"])
def test_break_on_kernel_path_is_resumed(
    server: Server, tmp_path: Path, ignore_range: bool
) -> None:
    server.add("/img", DATA, drop_after=2_500_000, drop_times=1, ignore_range=ignore_range)
    tap = PipeReader()
    done, moves = fetch_into(server, "/img", tmp_path / "out", [tap], retries=1)
    assert not done  # the rest came through the normal path
    assert moves.kernel > 0
    assert (tmp_path / "out").read_bytes() == DATA
    assert moves.first + tap.finish().__len__() == len(DATA)
    statuses = [h.status for h in server.hits("/img")]
    assert statuses == ([200, 200] if ignore_range else [200, 206])


def test_silent_server_times_out_then_resumes(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data for longer than the read timeout on the kernel path: a resumable break."""
    monkeypatch.setenv(http.TIMEOUT_ENV, "0.3")
    server.add("/img", DATA, stall_after=2_000_000, stall_seconds=2.0)
    done, moves = fetch_into(server, "/img", tmp_path / "out", [], retries=1)
    assert not done and moves.kernel > 0
    assert (tmp_path / "out").read_bytes() == DATA
    hits = server.hits("/img")
    assert [h.status for h in hits] == [200, 206]
    assert hits[1].headers["range"] == f"bytes={moves.first + moves.kernel}-"


def test_break_without_budget_fails(server: Server, tmp_path: Path) -> None:
    server.add("/img", DATA, drop_after=2_500_000, drop_times=1)
    with pytest.raises(NestosError) as info:
        fetch_into(server, "/img", tmp_path / "out", [])
    assert chain(info.value)[0] == f"reading '{server.url('/img')}'"
    assert "peer closed connection" in chain(info.value)[1]


def test_no_content_length_uses_normal_path(server: Server, tmp_path: Path) -> None:
    server.add("/img", DATA, content_length=False)
    done, moves = fetch_into(server, "/img", tmp_path / "out", [])
    assert not done and moves.kernel == 0 and moves.first == 0
    assert (tmp_path / "out").read_bytes() == DATA


def test_buffered_bytes_keep_normal_path(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the socket's position is not exactly after what was handed over, the
    kernel must not touch it: the first chunk is kept and the pump carries on."""
    monkeypatch.setattr(plain.PlainStream, "body_bytes_read", lambda self: None)
    server.add("/img", DATA)
    done, moves = fetch_into(server, "/img", tmp_path / "out", [])
    assert not done and moves.kernel == 0 and moves.first > 0
    assert (tmp_path / "out").read_bytes() == DATA


def test_read_first_then_no_kernel_path(server: Server, tmp_path: Path) -> None:
    server.add("/img", DATA)
    resp = http.fetch(server.url("/img"))
    try:
        head = resp.read(10)
        fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            assert not resp.move_to(fd, [], lambda b: None, lambda n: None)
        finally:
            os.close(fd)
        assert head + resp.read() == DATA
    finally:
        resp.close()


@pytest.mark.parametrize("good", [True, False], ids=["sha256-match", "sha256-mismatch"])
def test_verified_reader_hashes_the_kernel_path(server: Server, tmp_path: Path, good: bool) -> None:
    """The sha256 of stream metadata is computed from a tee of the moved bytes."""
    server.add("/img", DATA)
    want = hashlib.sha256(DATA).hexdigest() if good else "0" * 64
    reader = VerifiedReader(
        http.fetch(server.url("/img")), verifier=None, sha256=want, progress=None
    )
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        reader.copy_into(fd)
        if good:
            reader.finish()
        else:
            with pytest.raises(NestosError, match="sha256 mismatch"):
                reader.finish()
    finally:
        os.close(fd)
        reader.close()
    assert reader.bytes_read == len(DATA)
    assert (tmp_path / "out").read_bytes() == DATA


def test_writeback_keeps_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        wb = kernel.Writeback(fd)
        for i in range(40):
            block = bytes([i]) * (1 << 20)
            os.write(fd, block)
            wb.advance(len(block))
        os.fsync(fd)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert len(data) == 40 << 20
    assert all(data[i << 20] == i for i in range(40))
