"""Unpacking and discovery against a synthetic repo and disk (no root needed)."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import NestosError
from nestos_inst.osmet.fiemap import FIEMAP_EXTENT_MERGED, check_flags, fiemap_path
from nestos_inst.osmet.format import (
    Extent,
    Header,
    Mapping,
    Osmet,
    Partition,
    checksum_to_object_path,
    read_file,
)
from nestos_inst.osmet.pack import write_packed
from nestos_inst.osmet.source import OsmetSource, find_osmet
from nestos_inst.osmet.unpack import open_image, unpack_to_device
from nestos_inst.sources import ImageSource

MIB = 1 << 20


@dataclass
class Packed:
    path: Path
    repo: Path
    disk: bytes
    objects: dict[str, bytes]  # hex -> content


def _make(tmp: Path, *, size_delta: int = 0, arch: str = "x86_64", ss: int = 512) -> Packed:
    rng = random.Random(7)  # noqa: S311 - test data
    a = rng.randbytes(10_000)  # 3 blocks, last one partial
    b = rng.randbytes(20_000)
    digests = {hashlib.sha256(a).hexdigest(): a, hashlib.sha256(b).hexdigest(): b}
    repo = tmp / "repo"
    for hexsum, content in digests.items():
        p = checksum_to_object_path(repo, bytes.fromhex(hexsum))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    da, db = (bytes.fromhex(h) for h in digests)
    disk = bytearray(rng.randbytes(64 * 1024) + bytes(3 * MIB - 64 * 1024))
    disk[-4096:] = rng.randbytes(4096)
    # object a at p1+4096 (block padded), second half of b at p2+8192
    p1, p2 = MIB, 2 * MIB
    disk[p1 + 4096 : p1 + 4096 + 12288] = a + bytes(12288 - len(a))
    disk[p2 + 8192 : p2 + 8192 + 8192] = b[12288:20000] + bytes(8192 - 7712)
    disk[p2 + 100 : p2 + 200] = rng.randbytes(100)
    parts = (
        Partition(p1, p2, (Mapping(Extent(0, 4096, 12288), da),)),
        Partition(p2, 3 * MIB - 4096, (Mapping(Extent(12288, 8192, 8192), db),)),
    )
    osmet = Osmet(parts, hashlib.sha256(disk).digest(), len(disk) + size_delta)
    out = io.BytesIO()
    written, skipped, _ = write_packed(io.BytesIO(bytes(disk)), out, parts, 0)
    assert written + skipped == len(disk)
    path = tmp / "img.osmet"
    header = Header("0.1.0", ss, "NestOS test", arch)
    path.write_bytes(header.encode() + osmet.encode() + out.getvalue())
    return Packed(path, repo, bytes(disk), {h: c for h, c in digests.items()})


def _read_all(packed: Packed) -> bytes:
    reader = open_image(read_file(packed.path), packed.repo)
    try:
        return reader.read()
    finally:
        reader.close()


def test_unpack_roundtrip(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    assert _read_all(packed) == packed.disk
    # small reads through readinto work too
    reader = open_image(read_file(packed.path), packed.repo)
    got = bytearray()
    while data := reader.read(777):
        got += data
    reader.close()
    assert bytes(got) == packed.disk


def test_unpack_to_file(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    target = tmp_path / "target"
    target.write_bytes(b"\xaa" * len(packed.disk))
    unpack_to_device(packed.path, packed.repo, target)
    assert target.read_bytes() == packed.disk


def _target(tmp_path: Path, n: int) -> Path:
    target = tmp_path / "target"
    target.write_bytes(b"\xaa" * n)
    return target


def test_missing_object_fails_before_writing(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    victim = checksum_to_object_path(packed.repo, bytes.fromhex(next(iter(packed.objects))))
    victim.unlink()
    target = _target(tmp_path, len(packed.disk))
    with pytest.raises(NestosError, match="missing OSTree object") as exc:
        unpack_to_device(packed.path, packed.repo, target)
    assert "No such file or directory" in str(exc.value.__cause__)
    assert target.read_bytes() == b"\xaa" * len(packed.disk)


def test_short_object_fails_before_writing(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    hexsum = list(packed.objects)[1]
    victim = checksum_to_object_path(packed.repo, bytes.fromhex(hexsum))
    victim.write_bytes(packed.objects[hexsum][:5000])
    target = _target(tmp_path, len(packed.disk))
    with pytest.raises(NestosError, match="is shorter than its mapping"):
        unpack_to_device(packed.path, packed.repo, target)
    assert target.read_bytes() == b"\xaa" * len(packed.disk)


def test_symlink_object_refused(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    victim = checksum_to_object_path(packed.repo, bytes.fromhex(next(iter(packed.objects))))
    victim.unlink()
    victim.symlink_to("/etc/passwd")
    with pytest.raises(NestosError, match="is not a regular file"):
        _read_all(packed)


def test_altered_object_wipes_first_mib(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    hexsum = next(iter(packed.objects))
    victim = checksum_to_object_path(packed.repo, bytes.fromhex(hexsum))
    content = bytearray(packed.objects[hexsum])
    content[5] ^= 1
    victim.write_bytes(content)
    target = _target(tmp_path, len(packed.disk))
    with pytest.raises(NestosError, match="while unpacking") as exc:
        unpack_to_device(packed.path, packed.repo, target)
    assert "expected final checksum" in str(exc.value.__cause__)
    assert target.read_bytes()[:MIB] == bytes(MIB)


def test_tampered_stream(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    data = bytearray(packed.path.read_bytes())
    data[-200] ^= 0x40
    packed.path.write_bytes(data)
    target = _target(tmp_path, len(packed.disk))
    with pytest.raises(NestosError, match="while unpacking"):
        unpack_to_device(packed.path, packed.repo, target)
    assert target.read_bytes()[:MIB] == bytes(MIB)


def test_truncated_stream(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    data = packed.path.read_bytes()
    packed.path.write_bytes(data[:-50])
    with pytest.raises(NestosError, match="while unpacking"):
        _read_all(packed)


def test_trailing_data(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    with packed.path.open("ab") as f:
        f.write(b"junk")
    with pytest.raises(NestosError, match="while unpacking") as exc:
        _read_all(packed)
    assert "found trailing data after compressed stream" in str(exc.value.__cause__)


def test_size_mismatch(tmp_path: Path) -> None:
    packed = _make(tmp_path, size_delta=10)
    with pytest.raises(NestosError, match="while unpacking") as exc:
        _read_all(packed)
    n = len(packed.disk)
    assert str(exc.value.__cause__) == f"wrote {n} bytes but expected {n + 10}"


def test_close_early_does_not_hang(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    reader = open_image(read_file(packed.path), packed.repo)
    assert reader.read(10)
    reader.close()


def test_find_osmet(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "nestos", tmp_path / "coreos"
    d1.mkdir()
    d2.mkdir()
    (d1 / "subdir").mkdir()
    a = _make(tmp_path / "a", arch="aarch64")
    b = _make(tmp_path / "b", ss=4096)
    c = _make(tmp_path / "c")
    os.replace(a.path, d1 / "arm.osmet")
    os.replace(b.path, d1 / "4k.osmet")
    (d1 / "link.osmet").symlink_to(c.path)  # not a regular entry: skipped
    os.replace(c.path, d2 / "x86.osmet")
    repo = tmp_path / "repo"
    dirs = [tmp_path / "missing", d1, d2]
    src = find_osmet("x86_64", 512, dirs, repo)
    assert src is not None
    assert src.osmet_file.path == d2 / "x86.osmet"
    assert src.filename == "x86.raw"
    assert src.length == len(c.disk)
    assert src.artifact_type == "disk"
    assert src.signature() is None
    assert src.description == "Installing NestOS test x86_64 (512-byte sectors)"
    src4k = find_osmet("x86_64", 4096, dirs, repo)
    assert src4k is not None and src4k.osmet_file.path == d1 / "4k.osmet"
    assert find_osmet("s390x", 512, dirs, repo) is None
    assert find_osmet("x86_64", 512, [tmp_path / "missing"], repo) is None
    (d1 / "junk").write_bytes(b"not osmet")
    with pytest.raises(NestosError, match="reading osmet file") as exc:
        find_osmet("x86_64", 512, dirs, repo)
    assert str(exc.value.__cause__) == "not an OSMET file!"


def test_source_open_streams_image(tmp_path: Path) -> None:
    packed = _make(tmp_path)
    d = tmp_path / "osmet"
    d.mkdir()
    os.replace(packed.path, d / "img.osmet")
    src = find_osmet("x86_64", 512, [d], packed.repo)
    assert src is not None
    f = src.open()
    try:
        assert f.read() == packed.disk
    finally:
        f.close()


def test_fiemap_of_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(50_000))
    os.sync()
    extents = fiemap_path(path)
    assert extents, "tmp filesystem returned no extents"
    assert extents[0].logical == 0
    assert sum(e.length for e in extents) >= 50_000
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    assert fiemap_path(empty) == []


def test_fiemap_fatal_flags() -> None:
    check_flags(0x1 | 0x2000, 0)  # LAST | SHARED are fine
    with pytest.raises(NestosError, match="MERGED"):
        check_flags(FIEMAP_EXTENT_MERGED, 4096)


def as_image_source(src: OsmetSource) -> ImageSource:
    """mypy checks that OsmetSource satisfies the install helper's protocol."""
    return src


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_pack_unpack_property(data: st.DataObject) -> None:
    """Any valid table over any disk: write_packed + unpack reproduces the disk."""
    rng = random.Random(data.draw(st.integers(0, 2**32)))  # noqa: S311 - test data
    disk = bytearray(rng.randbytes(64 * 1024))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(disk)), max_size=12))))
    segments = [(a, b) for a, b in itertools.pairwise(cuts) if b > a][::2]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        mappings = []
        for a, b in segments:
            logical = rng.randint(0, 5000)
            keep = rng.randint(1, b - a)  # object may end early: the rest must be zeros
            disk[a + keep : b] = bytes(b - a - keep)
            content = rng.randbytes(logical) + bytes(disk[a : a + keep])
            digest = hashlib.sha256(content).digest()
            path = checksum_to_object_path(repo, digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            mappings.append(Mapping(Extent(logical, a, b - a), digest))
        part = Partition(0, len(disk), tuple(mappings))
        out = io.BytesIO()
        write_packed(io.BytesIO(bytes(disk)), out, [part], 0)
        osmet = Osmet((part,), hashlib.sha256(disk).digest(), len(disk))
        f = Path(tmp) / "x.osmet"
        f.write_bytes(Header("1", 512, "d", "x86_64").encode() + osmet.encode() + out.getvalue())
        reader = open_image(read_file(f), repo)
        try:
            assert reader.read() == bytes(disk)
        finally:
            reader.close()


@pytest.fixture(scope="module")
def valid_osmet(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    return _make(tmp_path_factory.mktemp("valid"))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_file_only_our_errors(valid_osmet: Packed, data: st.DataObject) -> None:
    """Flip bytes of the header/table (or cut the file): only NestosError escapes."""
    blob = bytearray(valid_osmet.path.read_bytes())
    table_end = read_file(valid_osmet.path).data_offset
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, table_end - 1))
        blob[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.osmet"
        path.write_bytes(blob)
        try:
            reader = open_image(read_file(path), valid_osmet.repo)
            try:
                while reader.read(CHUNK_TEST):
                    pass
            finally:
                reader.close()
        except NestosError:
            pass


CHUNK_TEST = 1 << 20
