"""write_image on regular files: first MiB last, checks before the first write."""

from __future__ import annotations

import io
import lzma
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.disk.saved import SavedPartitions
from nestos_inst.errors import NestosError, VerifyError, format_chain
from nestos_inst.install.writer import MiB, write_image


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def gpt_head(sector_size: int) -> bytes:
    """A first MiB that sniffs as a GPT of the given sector size."""
    head = bytearray(pattern(MiB))
    head[sector_size : sector_size + 8] = b"EFI PART"
    other = 4096 if sector_size == 512 else 512
    head[other : other + 8] = b"XXXXXXXX"
    return bytes(head)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xaa" * (4 * MiB))
    fd = os.open(path, os.O_RDWR)
    try:
        yield path, fd
    finally:
        os.close(fd)


def test_round_trip_xz(target: tuple[Path, int]) -> None:
    path, fd = target
    data = pattern(3 * MiB)
    result = write_image(io.BytesIO(lzma.compress(data)), fd, saved=None, expected_sector_size=512)
    assert result.written == len(data)
    assert path.read_bytes()[: len(data)] == data


def test_first_mib_never_written_when_verification_fails(target: tuple[Path, int]) -> None:
    path, fd = target
    data = pattern(3 * MiB)

    def finish() -> None:
        raise VerifyError("GPG verification failure")

    with pytest.raises(VerifyError):
        write_image(io.BytesIO(data), fd, saved=None, expected_sector_size=512, finish=finish)
    out = path.read_bytes()
    assert out[:MiB] == bytes(MiB)  # placeholder zeros, not the image's table
    assert out[MiB : 3 * MiB] == data[MiB:]


def test_saved_object_writes_fresh_table_first(target: tuple[Path, int]) -> None:
    path, fd = target
    saved = SavedPartitions(512, 4 * MiB)

    def finish() -> None:
        raise VerifyError("bad")

    with pytest.raises(VerifyError):
        write_image(
            io.BytesIO(gpt_head(512) + pattern(MiB)),
            fd,
            saved=saved,
            expected_sector_size=512,
            finish=finish,
        )
    out = path.read_bytes()
    assert out[512:520] == b"EFI PART"  # our fresh, empty table
    assert out[:446] == bytes(446)
    assert out[510:512] == b"\x55\xaa"


def test_sector_size_mismatch_before_any_write(target: tuple[Path, int]) -> None:
    path, fd = target
    before = path.read_bytes()
    with pytest.raises(NestosError) as exc:
        write_image(
            io.BytesIO(gpt_head(512) + pattern(MiB)), fd, saved=None, expected_sector_size=4096
        )
    assert str(exc.value) == "source has sector size 512 but destination has sector size 4096"
    assert path.read_bytes() == before


def test_short_image(target: tuple[Path, int]) -> None:
    path, fd = target
    before = path.read_bytes()
    with pytest.raises(NestosError) as exc:
        write_image(io.BytesIO(b"x" * 1000), fd, saved=None, expected_sector_size=512)
    assert format_chain(exc.value).startswith("Error: decoding first MiB of image")
    assert path.read_bytes() == before


def test_truncated_xz(target: tuple[Path, int]) -> None:
    _, fd = target
    blob = lzma.compress(pattern(3 * MiB))
    with pytest.raises(NestosError):
        write_image(io.BytesIO(blob[:-20]), fd, saved=None, expected_sector_size=512)


def test_size_limit(target: tuple[Path, int]) -> None:
    path, fd = target
    with pytest.raises(NestosError, match=r"image is larger than x \(2097152 bytes\)"):
        write_image(
            io.BytesIO(pattern(3 * MiB)),
            fd,
            saved=None,
            expected_sector_size=None,
            size_limit=2 * MiB,
            size_limit_message="image is larger than x (2097152 bytes)",
        )
    assert path.read_bytes()[2 * MiB :] == b"\xaa" * (2 * MiB)
