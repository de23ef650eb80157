"""Upstream's initrd fixtures (docs/compat.md#reference-results)."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import pytest

from nestos_inst.formats.glob import compile_glob
from nestos_inst.formats.initrd import read_initrd
from tests.helpers.cli import run_cli

pytestmark = pytest.mark.compat

ALL10 = [
    f"{p}/{n}"
    for p in ["gzip", "uncompressed-1", "uncompressed-2", "xz", "zstd"]
    for n in ["hello", "world"]
]


def _fixture(upstream: Path, name: str) -> bytes:
    path = upstream / "initrd" / name
    if not path.exists():
        pytest.skip(f"fixture {path} missing")
    data = path.read_bytes()
    return lzma.decompress(data) if name.endswith(".xz") else data


@pytest.fixture(scope="module")
def compressed(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The decompressed fixture in a private temp dir (never copied into the repo)."""
    path = tmp_path_factory.mktemp("compat") / "compressed.img"
    path.write_bytes(_fixture(upstream, "compressed.img.xz"))
    return path


def test_compression(compressed: Path) -> None:
    members = read_initrd(compressed.read_bytes())
    assert list(members) == ALL10
    for name, data in members.items():
        assert data == (b"HELLO\n" if name.endswith("hello") else b"WORLD\n")


@pytest.mark.parametrize(
    ("pattern", "count"), [("gzip/hello", 1), ("gzip/*", 2), ("*/hello", 5), ("*", 10), ("z", 0)]
)
def test_matching_unfiltered(compressed: Path, pattern: str, count: int) -> None:
    members = read_initrd(compressed.read_bytes())
    assert sum(compile_glob(pattern)(name) for name in members) == count


@pytest.mark.parametrize(("pattern", "count"), [("z", 0), ("gzip/*", 2), ("uncompressed-*", 4)])
def test_matching_filtered(compressed: Path, pattern: str, count: int) -> None:
    assert len(read_initrd(compressed.read_bytes(), [pattern])) == count


def test_redundancy(upstream: Path) -> None:
    assert read_initrd(_fixture(upstream, "redundant.img.xz")) == {"data/file": b"third\n"}


def test_padded_filenames(upstream: Path) -> None:
    members = read_initrd(_fixture(upstream, "padded-names.img.xz"))
    assert members == {"dir/hello": b"z" * 5000, "dir/world": b"q" * 4500}


def test_traversal_members_read_verbatim(upstream: Path) -> None:
    absolute = read_initrd(_fixture(upstream, "traversal-absolute.img"))
    assert list(absolute) == ["/etc/adjtime"]
    assert len(absolute["/etc/adjtime"]) == 16
    assert read_initrd(_fixture(upstream, "traversal-relative.img")) == {"../f": b"contents\n"}


# --- dev-initrd.sh ----------------------------------------------------------------------


def _ok(*args: str | os.PathLike[str], **kw: object) -> bytes:
    proc = run_cli(*args, **kw)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_dev_initrd_script(compressed: Path, tmp_path: Path) -> None:
    listing = "".join(f"{p}\n" for p in ALL10).encode()
    assert _ok("dev", "show", "initrd", compressed) == listing
    assert _ok("dev", "show", "initrd", "-", input=compressed.read_bytes()) == listing
    assert _ok("dev", "show", "initrd", compressed, "*hello").decode().split() == [
        p for p in ALL10 if p.endswith("hello")
    ]
    assert _ok("dev", "show", "initrd", compressed, "gzip/*") == b"gzip/hello\ngzip/world\n"
    assert _ok("dev", "show", "initrd", compressed, "gzip*", "xz*").decode().split() == [
        "gzip/hello",
        "gzip/world",
        "xz/hello",
        "xz/world",
    ]

    _ok("dev", "extract", "initrd", compressed, cwd=tmp_path)
    for path in ALL10:
        assert (tmp_path / path).is_file()
    again = run_cli("dev", "extract", "initrd", compressed, cwd=tmp_path)
    assert again.returncode == 1 and b"exists" in again.stderr

    out = _ok(
        "dev",
        "extract",
        "initrd",
        "-v",
        "-C",
        "d",
        "-",
        input=compressed.read_bytes(),
        cwd=tmp_path,
    )
    assert out.decode() == "".join(f"d/{p}\n" for p in ALL10)

    _ok("dev", "extract", "initrd", "-C", "e", compressed, "gzip/*", "*/world", cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / "e")) == sorted(
        ["gzip", "uncompressed-1", "uncompressed-2", "xz", "zstd"]
    )
    assert sorted(os.listdir(tmp_path / "e" / "xz")) == ["world"]
    _ok("dev", "extract", "initrd", "-C", "f", compressed, "gzip/*", cwd=tmp_path)
    assert os.listdir(tmp_path / "f") == ["gzip"]


@pytest.mark.parametrize(
    ("name", "member"),
    [("traversal-absolute.img", "/etc/adjtime"), ("traversal-relative.img", "../f")],
)
def test_dev_extract_traversal(upstream: Path, tmp_path: Path, name: str, member: str) -> None:
    path = upstream / "initrd" / name
    if not path.exists():
        pytest.skip(f"fixture {path} missing")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    proc = run_cli("dev", "extract", "initrd", path, cwd=work)
    assert proc.returncode == 1
    assert f"path {member} contains path traversal".encode() in proc.stderr
    assert list(tmp_path.rglob("*")) == [tmp_path / "a", work]
