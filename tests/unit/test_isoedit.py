"""Output modes: in place, `-o PATH` (kernel copy + no-clobber link), `-o -` stream."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError, chain
from nestos_inst.formats import isoedit

PREFIX = ".nestos-installer-temp-"
SIZE = 3 * 1024 * 1024
REGIONS = [(5000, b"B" * 100), (4096, b"A" * 10), (SIZE - 4, b"ZZZZ")]


def _expected(src: bytes) -> bytes:
    data = bytearray(src)
    for offset, patch in REGIONS:
        data[offset : offset + len(patch)] = patch
    return bytes(data)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.img"
    path.write_bytes(os.urandom(SIZE))
    return path


def _temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(PREFIX)]


def test_three_modes_identical(src: Path, tmp_path: Path) -> None:
    expected = _expected(src.read_bytes())
    fd = os.open(src, os.O_RDONLY)
    try:
        out = tmp_path / "out.img"
        isoedit.write_copy(fd, REGIONS, str(out), PREFIX)
        stream = tmp_path / "stream.img"
        with open(stream, "wb") as f:
            isoedit.write_stream(fd, REGIONS, f.fileno())
    finally:
        os.close(fd)
    assert out.read_bytes() == expected
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stream.read_bytes() == expected
    fd = os.open(src, os.O_RDWR)
    try:
        isoedit.write_in_place(fd, REGIONS, str(src))
    finally:
        os.close(fd)
    assert src.read_bytes() == expected
    assert _temps(tmp_path) == []


def test_stream_through_pipe(src: Path) -> None:
    expected = _expected(src.read_bytes())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: stream into the pipe (sendfile to a pipe)
        os.close(r)
        fd = os.open(src, os.O_RDONLY)
        isoedit.write_stream(fd, REGIONS, w)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 20):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"".join(chunks) == expected


def test_no_clobber(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    out.write_bytes(b"precious")
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(NestosError) as info:
            isoedit.write_copy(fd, REGIONS, str(out), PREFIX)
    finally:
        os.close(fd)
    assert chain(info.value) == [f"persisting output file to {out}", "File exists (os error 17)"]
    assert out.read_bytes() == b"precious"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([(0, b"xx"), (1, b"y")], "region starting at 1 precedes current offset 2"),
        ([(SIZE - 1, b"xx")], f"region starting at {SIZE - 1} extends beyond end of image"),
    ],
)
def test_bad_regions_write_nothing(
    src: Path, tmp_path: Path, regions: list[tuple[int, bytes]], message: str
) -> None:
    before = src.read_bytes()
    fd = os.open(src, os.O_RDWR)
    try:
        with pytest.raises(FormatError, match=message):
            isoedit.write_in_place(fd, regions, str(src))
        with pytest.raises(FormatError, match=message):
            isoedit.write_copy(fd, regions, str(tmp_path / "o.img"), PREFIX)
        with open(os.devnull, "wb") as null, pytest.raises(FormatError, match=message):
            isoedit.write_stream(fd, regions, null.fileno())
    finally:
        os.close(fd)
    assert src.read_bytes() == before
    assert not (tmp_path / "o.img").exists()
    assert _temps(tmp_path) == []


def test_sparse_copy_keeps_holes(tmp_path: Path) -> None:
    src = tmp_path / "sparse.img"
    with open(src, "wb") as f:
        f.truncate(256 * 1024 * 1024)
        f.seek(1 << 20)
        f.write(b"data" * 1024)
    fd = os.open(src, os.O_RDONLY)
    try:
        isoedit.write_copy(fd, [(10, b"x")], str(tmp_path / "out.img"), PREFIX)
    finally:
        os.close(fd)
    out = tmp_path / "out.img"
    assert out.stat().st_size == src.stat().st_size
    assert out.stat().st_blocks * 512 < 16 * 1024 * 1024
    with open(out, "rb") as f:
        assert f.read(11) == bytes(10) + b"x"
        f.seek(1 << 20)
        assert f.read(8) == b"datadata"


def test_userspace_fallback(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*_: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def unsupported(*_: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    monkeypatch.setattr(os, "sendfile", unsupported)
    expected = _expected(src.read_bytes())
    fd = os.open(src, os.O_RDONLY)
    try:
        isoedit.write_copy(fd, REGIONS, str(tmp_path / "out.img"), PREFIX)
        with open(tmp_path / "stream.img", "wb") as f:
            isoedit.write_stream(fd, REGIONS, f.fileno())
    finally:
        os.close(fd)
    assert (tmp_path / "out.img").read_bytes() == expected
    assert (tmp_path / "stream.img").read_bytes() == expected


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spans=st.lists(
        st.tuples(st.integers(min_value=0, max_value=8191), st.integers(min_value=1, max_value=64)),
        max_size=6,
    )
)
def test_modes_agree_on_random_regions(tmp_path: Path, spans: list[tuple[int, int]]) -> None:
    size = 8192
    src = tmp_path / "src.img"
    src.write_bytes(bytes(range(256)) * (size // 256))
    regions = [(off, bytes([0xAA]) * min(n, size - off)) for off, n in spans]
    try:
        ordered = isoedit.check_regions(regions, size)
    except FormatError:
        return  # overlapping: refused in every mode (tested above)
    expected = bytearray(src.read_bytes())
    for off, data in ordered:
        expected[off : off + len(data)] = data
    out = tmp_path / "out.img"
    out.unlink(missing_ok=True)
    fd = os.open(src, os.O_RDWR)
    try:
        isoedit.write_copy(fd, regions, str(out), PREFIX)
        with open(tmp_path / "stream.img", "wb") as f:
            isoedit.write_stream(fd, regions, f.fileno())
        isoedit.write_in_place(fd, regions, str(src))
    finally:
        os.close(fd)
    assert out.read_bytes() == bytes(expected)
    assert (tmp_path / "stream.img").read_bytes() == bytes(expected)
    assert src.read_bytes() == bytes(expected)
