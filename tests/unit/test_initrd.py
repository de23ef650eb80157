"""The initrd reader and writer (docs/compat.md#initrd-archive-format, #initrd-reader)."""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path

import pytest

from nestos_inst.errors import FormatError
from nestos_inst.formats import cpio
from nestos_inst.formats.initrd import read_initrd, read_initrd_stream, write_initrd
from tests.helpers import initrdmedia

CONFIG = b'{"ignition": {"version": "3.0.0"}\n'
ALL10 = [
    f"{p}/{n}"
    for p in ["gzip", "uncompressed-1", "uncompressed-2", "xz", "zstd"]
    for n in ["hello", "world"]
]


def test_reference_xz() -> None:
    data = write_initrd({"config.ign": CONFIG})
    assert len(data) == 148
    digest = "79b330cf3b6531fd1a5f9341b556031071c59b9fd88d4638f3bf004d0e2d48cf"
    assert hashlib.sha256(data).hexdigest() == digest


def test_roundtrip() -> None:
    assert read_initrd(write_initrd({"z": b"{}"})) == {"z": b"{}"}
    assert read_initrd(write_initrd({})) == {}


def test_real_tools_read_ours() -> None:
    data = write_initrd({"config.ign": CONFIG, "etc/x/y": b"y"})
    assert initrdmedia.cpio_list(initrdmedia.xzcat(data)) == [
        "config.ign",
        "etc",
        "etc/x",
        "etc/x/y",
    ]
    assert initrdmedia.bsdtar_list(data) == ["config.ign", "etc", "etc/x", "etc/x/y"]


@pytest.fixture(scope="module")
def image() -> bytes:
    return initrdmedia.compat_like_image()


def test_compression(image: bytes) -> None:
    members = read_initrd(image)
    assert list(members) == ALL10
    assert all(v == (b"HELLO\n" if k.endswith("hello") else b"WORLD\n") for k, v in members.items())


@pytest.mark.parametrize(
    ("patterns", "count"),
    [(["z"], 0), (["gzip/*"], 2), (["uncompressed-*"], 4), (["*hello"], 5), (["*"], 10), ([], 0)],
)
def test_filter(image: bytes, patterns: list[str], count: int) -> None:
    assert len(read_initrd(image, patterns)) == count


def test_redundancy() -> None:
    data = b"".join(
        initrdmedia.gnu_cpio({"data/file": t}) for t in [b"first\n", b"second\n", b"third\n"]
    )
    assert read_initrd(data) == {"data/file": b"third\n"}


def test_zero_padding_between_archives() -> None:
    one = write_initrd({"a": b"1"})
    two = initrdmedia.gzip(cpio.write_archive({"b": b"2"}))
    data = b"\0" * 7 + one + b"\0" * 4096 + two + b"\0" * 3
    assert read_initrd(data) == {"a": b"1", "b": b"2"}


def test_zero_padding_inside_compressed() -> None:
    for kind in ["gzip", "xz", "zstd"]:
        data = initrdmedia.COMPRESSORS[kind](cpio.write_archive({"a": b"1"}) + b"\0" * 1000)
        assert read_initrd(data) == {"a": b"1"}


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_trailing_garbage_inside(kind: str) -> None:
    data = initrdmedia.COMPRESSORS[kind](cpio.write_archive({"a": b"1"}) + b"\0\0garbage")
    with pytest.raises(FormatError, match=r"^found trailing garbage inside compressed archive$"):
        read_initrd(data)


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_truncated(kind: str) -> None:
    data = initrdmedia.COMPRESSORS[kind](cpio.write_archive({"a": b"1" * 5000}))
    with pytest.raises(FormatError, match=f"unexpected end of {kind} stream"):
        read_initrd(data[:-1])


def test_only_regular_files() -> None:
    data = initrdmedia.gnu_cpio({"d/f": b"x"})
    assert read_initrd(data) == {"d/f": b"x"}


class Trickle(io.RawIOBase):
    """A stream that returns at most `step` bytes per read, like a slow pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._step if n < 0 else min(n, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_stream_and_tee(image: bytes, step: int) -> None:
    data = image + b"\0" * 100 + write_initrd({"config.ign": b"{}"})
    copied: list[bytes] = []
    members = read_initrd_stream(Trickle(data, step), tee=copied.append)
    assert b"".join(copied) == data
    assert list(members) == sorted([*ALL10, "config.ign"])


def test_all_zero_is_empty() -> None:
    assert read_initrd(b"") == {}
    assert read_initrd(b"\0" * 262144) == {}


def test_hostile_xz_dictionary() -> None:
    """An xz block claiming a 4 GiB dictionary is refused instead of reserved."""
    data = bytearray(write_initrd({"a": b"1"}))
    size = (data[12] + 1) * 4  # block header after the 12-byte stream header
    header = data[12 : 12 + size]
    pos = header.index(b"\x21\x01")  # LZMA2 filter id, 1 property byte
    header[pos + 2] = 40  # dictionary size code 40 = 4 GiB - 1
    header[-4:] = zlib.crc32(bytes(header[:-4])).to_bytes(4, "little")
    data[12 : 12 + size] = header
    with pytest.raises(FormatError, match="decoding xz stream"):
        read_initrd(bytes(data))


def test_gzip_multi_member_is_one_archive_each() -> None:
    one = initrdmedia.gzip(cpio.write_archive({"a": b"1"}))
    two = initrdmedia.gzip(cpio.write_archive({"b": b"2"}))
    assert read_initrd(one + two) == {"a": b"1", "b": b"2"}


def test_xz_crc64_and_sha256_checks() -> None:
    archive = cpio.write_archive({"a": b"1"})
    for check in ["crc64", "sha256", "none"]:
        assert read_initrd(initrdmedia.xz(archive, check)) == {"a": b"1"}


def test_zstd_multiframe_and_skippable() -> None:
    archive = cpio.write_archive({"a": b"x" * 1000, "b": b"y"})
    half = len(archive) // 2
    skippable = (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    data = skippable + initrdmedia.zstd(archive[:half]) + initrdmedia.zstd(archive[half:])
    assert read_initrd(data) == {"a": b"x" * 1000, "b": b"y"}


def test_cpio_extracts_ours(tmp_path: Path) -> None:
    members = {"config.ign": CONFIG, "etc/nestos-firstboot-network/a b": b"x" * 1001, "é": b""}
    initrdmedia.cpio_extract(initrdmedia.xzcat(write_initrd(members)), tmp_path)
    got = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert got == members
    assert (tmp_path / "config.ign").stat().st_mode & 0o7777 == 0o600
    assert (tmp_path / "etc").stat().st_mode & 0o7777 == 0o755


def test_customize_style_append() -> None:
    """The `pxe customize` pattern: copy the input via tee while filtering, then append."""
    live = initrdmedia.live_initramfs()
    out = io.BytesIO()
    wanted = ["etc/nestos-live-initramfs", "etc/nestos/features.json", "config.ign"]
    found = read_initrd_stream(io.BytesIO(live), wanted, tee=out.write)
    assert sorted(found) == ["etc/nestos-live-initramfs", "etc/nestos/features.json"]
    out.write(write_initrd({"config.ign": CONFIG}))
    result = out.getvalue()
    assert result[: len(live)] == live
    assert result[len(live)] == 0xFD and result[len(live) + 1 : len(live) + 6] == b"7zXZ\0"
    assert read_initrd(result, ["config.ign"]) == {"config.ign": CONFIG}
