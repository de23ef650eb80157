"""The initrd reader and writer (compat-spec §1.8, §3.3)."""

from __future__ import annotations

import hashlib

import pytest

from nestos_inst.errors import FormatError
from nestos_inst.formats import cpio
from nestos_inst.formats.initrd import read_initrd, write_initrd
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
