"""ISO9660 reader on images xorriso builds (a synthetic, non-live layout)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.formats.iso9660 import IsoFs, NotFoundError, decode_name, path_components
from tests.helpers.isomedia import assert_truncated_refused, build_plain_iso, parse_mutated

FILES = {
    "content/file.txt": b"hello\n",
    "content/dir/subfile.txt": b"sub\n",
    "really/very/deeply/nested/file.txt": b"foo\n",
    **{f"largedir/{i}.dat": str(i).encode() for i in range(1, 151)},
}

FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def plain_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iso9660") / "plain.iso"
    build_plain_iso(path, FILES)
    return path


@pytest.fixture
def fs(plain_iso: Path) -> Iterator[IsoFs]:
    fd = os.open(plain_iso, os.O_RDONLY)
    try:
        yield IsoFs(fd)
    finally:
        os.close(fd)


def test_primary_volume_descriptor(fs: IsoFs, plain_iso: Path) -> None:
    primary = [d for d in fs.descriptors if d.kind == "primary"]
    assert len(primary) == 1
    assert primary[0].fields["volume_id"] == "plain"
    assert primary[0].fields["root"]["name"] == "."
    assert fs.volume_space_size * 2048 <= plain_iso.stat().st_size


def test_get_path_kinds(fs: IsoFs) -> None:
    assert fs.get_path("/").name == "."
    assert fs.get_path("./CONTENT").is_dir
    assert not fs.get_path("CONTENT/FILE.TXT").is_dir
    for missing in ("MISSING", "MISSING/STUFF.TXT", "CONTENT/FILE.TXT/STUFF.TXT"):
        with pytest.raises(NotFoundError):
            fs.get_path(missing)
    with pytest.raises(FormatError, match="entry CONTENT is a directory"):
        fs.get_file("CONTENT")
    with pytest.raises(FormatError, match="is a file"):
        list(fs.list_dir(fs.get_path("CONTENT/FILE.TXT")))


def test_list_and_read(fs: IsoFs) -> None:
    assert [r.name for r in fs.list_dir(fs.get_path("CONTENT"))] == ["DIR", "FILE.TXT"]
    assert fs.read_file(fs.get_file("REALLY/VERY/DEEPLY/NESTED/FILE.TXT")) == b"foo\n"


def test_walk_is_sorted_and_spans_sectors(fs: IsoFs) -> None:
    paths = [p for p, _ in fs.walk()]
    assert paths == sorted(paths)
    assert len([p for p in paths if p.startswith("LARGEDIR/")]) == 150
    # 150 records don't fit one 2048-byte sector: the zero-padding skip must work.
    assert fs.get_path("LARGEDIR").length > 2048
    assert fs.read_file(fs.get_file("LARGEDIR/150.DAT")) == b"150"


@pytest.mark.parametrize(
    ("path", "comps"),
    [("z", ["z"]), ("/a/./../b", ["b"]), ("./a/../../b", ["b"]), ("/", []), ("", [])],
)
def test_path_components(path: str, comps: list[str]) -> None:
    assert path_components(path) == comps


def test_decode_name() -> None:
    assert decode_name(b"IGNINFO.JSO;1") == "IGNINFO.JSO"
    assert decode_name(b"_CMDLINE.;1") == "_CMDLINE"
    assert decode_name(b"A;B") == "A.B"
    assert decode_name(b"ABC\0junk") == "ABC"
    with pytest.raises(FormatError, match="invalid string name"):
        decode_name(b"bad\xff")


def test_truncated_iso(plain_iso: Path, tmp_path: Path) -> None:
    assert_truncated_refused(plain_iso, tmp_path)


def test_no_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "zeros.iso"
    path.write_bytes(bytes(40 * 2048))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FormatError, match="unknown descriptor ID"):
            IsoFs(fd)
    finally:
        os.close(fd)


def _parse_everything(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fs = IsoFs(fd)
        for _, rec in fs.walk():
            if not rec.is_dir and rec.length < 1 << 20:
                fs.read_file(rec)
    finally:
        os.close(fd)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=32768, max_value=48 * 2048), st.binary(min_size=1, max_size=8)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_mutated_iso_only_raises_our_errors(
    plain_iso: Path, tmp_path: Path, edits: list[tuple[int, bytes]]
) -> None:
    parse_mutated(plain_iso.read_bytes(), edits, tmp_path / "mutated.iso", _parse_everything)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(min_size=0, max_size=4096))
def test_random_bytes_only_raise_our_errors(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "random.iso"
    path.write_bytes(bytes(32768) + blob)
    try:
        _parse_everything(path)
    except NestosError:
        pass
