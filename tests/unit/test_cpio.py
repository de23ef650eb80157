"""newc reader/writer (docs/compat.md#initrd-archive-format, #initrd-reader)."""

from __future__ import annotations

import pytest

from nestos_inst.errors import FormatError
from nestos_inst.formats import cpio
from tests.helpers import initrdmedia

CONFIG = b'{"ignition": {"version": "3.0.0"}\n'


def test_reference_vector() -> None:
    archive = cpio.write_archive({"config.ign": CONFIG})
    assert len(archive) == 284
    assert archive[:110] == (
        b"07070100000000000081800000000000000000000000010000000000000022"
        b"000000000000000000000000000000000000000b00000000"
    )
    assert archive[110:124] == b"config.ign\0\0\0\0"
    assert archive[124:160] == CONFIG + b"\0\0"
    trailer = (
        b"07070100000000000000000000000000000000000000010000000000000000"
        b"000000000000000000000000000000000000000b00000000"
    )
    assert archive[160:] == trailer + b"TRAILER!!!\0\0\0\0"


def test_directories() -> None:
    members = {p: b"x" for p in ["c/f", "c/a/b/d/f", "d", "c/g", "c/a/c/f", "a/b/c/d/e/f"]}
    entries = cpio.parse_archive(cpio.write_archive(members))
    got = [(e.name, "d" if e.mode == cpio.DIR_MODE else "f") for e in entries]
    assert got == [
        ("a", "d"), ("a/b", "d"), ("a/b/c", "d"), ("a/b/c/d", "d"), ("a/b/c/d/e", "d"),
        ("a/b/c/d/e/f", "f"),
        ("c", "d"), ("c/a", "d"), ("c/a/b", "d"), ("c/a/b/d", "d"), ("c/a/b/d/f", "f"),
        ("c/a/c", "d"), ("c/a/c/f", "f"), ("c/f", "f"), ("c/g", "f"), ("d", "f"),
    ]  # fmt: skip


def test_inodes_and_modes() -> None:
    archive = cpio.write_archive({"a/x": b"1", "a/y": b""})
    inos = [int(archive[i + 6 : i + 14], 16) for i in _offsets(archive)]
    assert inos == [0, 1, 2, 0]


def _offsets(archive: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(archive):
        out.append(pos)
        namesize = int(archive[pos + 94 : pos + 102], 16)
        size = int(archive[pos + 54 : pos + 62], 16)
        pos += (110 + namesize + 3) // 4 * 4
        pos += (size + 3) // 4 * 4
    return out


def test_gnu_cpio_reads_ours(tmp_path: object) -> None:
    members = {"etc/nestos-firstboot-network/a.nmconnection": b"[connection]\n", "z": b""}
    archive = cpio.write_archive(members)
    assert initrdmedia.cpio_list(archive) == [
        "etc",
        "etc/nestos-firstboot-network",
        "etc/nestos-firstboot-network/a.nmconnection",
        "z",
    ]


def test_reads_gnu_cpio() -> None:
    archive = initrdmedia.gnu_cpio({"d/hello": b"HELLO\n", "d/e/odd": b"abc"})
    entries = {e.name: e for e in cpio.parse_archive(archive)}
    assert entries["d/hello"].data == b"HELLO\n"
    assert entries["d/e/odd"].data == b"abc"
    assert entries["d"].mode & cpio.S_IFMT == cpio.S_IFDIR


def test_crc_magic_accepted() -> None:
    archive = cpio.write_archive({"f": b"data"})
    archive = archive.replace(b"070701", b"070702")
    assert [e.name for e in cpio.parse_archive(archive)] == ["f"]


def _bad(archive: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        cpio.parse_archive(archive)


GOOD = cpio.write_archive({"file": b"hello world"})


def test_bad_magic() -> None:
    _bad(b"070707" + GOOD[6:], "invalid cpio magic b'070707'")


def test_truncated_header() -> None:
    _bad(GOOD[:50], "unexpected end of cpio archive reading entry header")


def test_name_past_end() -> None:
    bad = GOOD[:94] + b"%08x" % 1000 + GOOD[102:]
    _bad(bad[:300], "unexpected end of cpio archive reading entry name")


def test_data_past_end() -> None:
    bad = GOOD[:54] + b"%08x" % 100000 + GOOD[62:]
    _bad(bad, "unexpected end of cpio archive reading data of file")


def test_missing_trailer() -> None:
    _bad(GOOD[:-124], "unexpected end of cpio archive reading entry header")


def test_bad_hex() -> None:
    _bad(GOOD[:60] + b"0x" + GOOD[62:], "invalid hex field in cpio header")


def test_non_utf8_name() -> None:
    archive = cpio.write_archive({"fil\xe9": b""}).replace(b"fil\xc3\xa9", b"fil\xff\xfe")
    _bad(archive, "not valid UTF-8")


def test_zero_namesize() -> None:
    _bad(GOOD[:94] + b"0" * 8 + GOOD[102:], "invalid cpio entry name size 0")


def test_padded_names() -> None:
    # dracut-cpio pads the name field with extra NULs, counted in namesize
    name = b"dir/x\0\0\0\0"
    head = b"070701" + b"".join(
        b"%08x" % f for f in (1, 0o100644, 0, 0, 1, 0, 2, 0, 0, 0, 0, len(name), 0)
    )
    entry = head + name + b"\0" * ((4 - (110 + len(name)) % 4) % 4) + b"ok\0\0"
    archive = entry + cpio.write_archive({})
    assert cpio.parse_archive(archive) == [cpio.Entry("dir/x", 0o100644, b"ok")]
