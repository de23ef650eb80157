"""`iso extract pxe`, `iso extract minimal-iso` and `pack minimal-iso` on media built
here with xorriso (NestOS and CoreOS layouts); no upstream fixtures needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from nestos_inst.formats import miniso
from nestos_inst.formats.iso9660 import IsoFs
from nestos_inst.formats.miniso import Entry, MinisoData
from tests.helpers.cli import run_cli
from tests.helpers.isomedia import (
    CONFIG,
    LiveIso,
    LiveIsoSpec,
    build_live_iso,
    build_plain_iso,
    fail,
    ok,
    run_main,
    sha,
    temps,
)
from tests.helpers.minisomedia import MinisoPair, build_pair

URL = "https://example.com/rootfs"


@dataclass
class Built:
    pair: MinisoPair
    minimal: LiveIso


@pytest.fixture(scope="module", params=["nestos", "coreos"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    prof = profiles.NESTOS if request.param == "nestos" else profiles.COREOS
    work = tmp_path_factory.mktemp(f"miniso-{request.param}")
    pair, minimal = build_pair(work, LiveIsoSpec(profile=prof))
    return Built(pair, minimal)


@pytest.fixture
def full(built: Built, tmp_path: Path) -> Path:
    """A private copy of the packed full ISO."""
    dest = tmp_path / "in" / "live.iso"
    dest.parent.mkdir()
    shutil.copyfile(built.pair.full.path, dest)
    return dest


def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    return d


def miniso_offset(path: Path, prof: profiles.Profile) -> tuple[int, int]:
    with open(path, "rb") as f:
        rec = IsoFs(f.fileno()).get_file(f"{prof.iso_dir}/MINISO.DAT")
    return rec.offset, rec.length


def read_miniso(path: Path, prof: profiles.Profile) -> MinisoData:
    off, length = miniso_offset(path, prof)
    with open(path, "rb") as f:
        f.seek(off)
        return miniso.parse(f.read(length))


def put_miniso(path: Path, prof: profiles.Profile, raw: bytes) -> None:
    off, length = miniso_offset(path, prof)
    assert len(raw) <= length
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(raw + bytes(length - len(raw)))


# ---- pack minimal-iso --------------------------------------------------------------------


def test_pack_reports_and_table(built: Built) -> None:
    lines = built.pair.pack_stderr.splitlines()
    assert lines[0] == "Packing minimal ISO"
    n_min = len(built.minimal.lbas)
    assert re.fullmatch(rf"Matched {n_min} files of {n_min}", lines[1])
    assert lines[2].startswith("Total bytes skipped: ")
    assert lines[3].startswith("Total bytes written: ")
    assert lines[4].startswith("Total bytes written (compressed): ")
    assert lines[5:] == ["Verifying that packed image matches digest", "Packing successful!"]
    prof = built.pair.profile
    data = read_miniso(built.pair.full.path, prof)
    assert data.digest.hex() == built.pair.minimal_sha()
    # Every table entry names a file at xorriso's own LBAs in both images.
    full_lbas = {(off // 2048, size) for off, size in built.pair.full.lbas.values()}
    min_lbas = {(off // 2048, size) for off, size in built.minimal.lbas.values()}
    for e in data.entries:
        assert (e.full, e.length) in full_lbas
        assert (e.minimal, e.length) in min_lbas
    assert sorted(data.entries) == data.entries
    # The rootfs (not in the minimal ISO) is not in the table; ignition.img is.
    rootfs_off = built.pair.full.lbas["images/pxeboot/rootfs.img"][0] // 2048
    assert all(e.full != rootfs_off for e in data.entries)
    ign_off = built.pair.full.lbas["images/ignition.img"][0] // 2048
    assert any(e.full == ign_off for e in data.entries)


def test_pack_consume_and_errors(built: Built, tmp_path: Path) -> None:
    spec = built.minimal.spec
    full = tmp_path / "full.iso"
    shutil.copyfile(built.pair.full.path, full)
    minimal = tmp_path / "minimal.iso"
    shutil.copyfile(built.minimal.path, minimal)
    put_miniso(full, spec.profile, b"")  # wipe it: pack must recreate the same digest
    ok(run_main("pack", "minimal-iso", "--consume", str(full), str(minimal)))
    assert not minimal.exists()
    assert read_miniso(full, spec.profile).digest.hex() == built.pair.minimal_sha()

    # A minimal ISO with a file the full one lacks, and one with a different length.
    meta = spec.profile.iso_dir.lower()
    for extra, message in (
        ({"extra/only.txt": b"x"}, "missing minimal file EXTRA/ONLY.TXT in full ISO"),
        (
            {"images/pxeboot/vmlinuz": b"a different kernel\n"},
            "File IMAGES/PXEBOOT/VMLINUZ has different lengths in full and minimal ISOs",
        ),
    ):
        other = tmp_path / "other.iso"
        other.unlink(missing_ok=True)
        build_live_iso(other, LiveIsoSpec(profile=spec.profile, extra_files=extra))
        before = sha(full)
        fail(run_main("pack", "minimal-iso", str(full), str(other)), message)
        assert sha(full) == before
        assert other.exists()
    # A full ISO without MINISO.DAT.
    plain = tmp_path / "plain.iso"
    build_live_iso(plain, LiveIsoSpec(profile=spec.profile))
    fail(
        run_main("pack", "minimal-iso", str(plain), str(built.minimal.path)),
        f"looking up '{meta.upper()}/MINISO.DAT'",
    )


def test_pack_refuses_data_bigger_than_the_file(built: Built, tmp_path: Path) -> None:
    """An incompressible minimal ISO does not fit in 16 KiB: nothing is written."""
    prof = built.pair.profile
    minimal = build_live_iso(tmp_path / "m.iso", LiveIsoSpec(profile=prof))
    with open(minimal.path, "r+b") as f:
        f.write(os.urandom(20 * 1024))  # system area: not in any file, so it is xz'd
    full = tmp_path / "full.iso"
    shutil.copyfile(built.pair.full.path, full)
    before = sha(full)
    fail(run_main("pack", "minimal-iso", str(full), str(minimal.path)), "do not fit in")
    assert sha(full) == before


# ---- iso extract minimal-iso ------------------------------------------------------------


def test_extract_file_and_stdout(built: Built, full: Path, tmp_path: Path) -> None:
    out = out_dir(tmp_path) / "minimal.iso"
    ok(run_main("iso", "extract", "minimal-iso", str(full), str(out)))
    expected = built.pair.expected(built.minimal)
    assert out.read_bytes() == expected
    res = ok(run_main("iso", "extract", "minimal-iso", str(full)))
    assert res.stdout == expected
    res = ok(run_main("iso", "extract", "minimal-iso", str(full), "-"))
    assert res.stdout == expected
    assert temps(out.parent) == []
    assert sha(full) == sha(built.pair.full.path)
    prof = built.pair.profile
    shown = ok(run_main("iso", "kargs", "show", str(out))).stdout.decode().strip()
    assert shown == built.pair.new_default()
    assert f"{prof.liveiso_karg}=" not in shown
    assert ok(run_main("iso", "kargs", "show", "-d", str(out))).stdout.decode().strip() == shown
    # `iso kargs reset` on the result must not bring the liveiso karg back.
    reset = ok(run_main("iso", "kargs", "reset", "-o", "-", str(out))).stdout
    assert reset == expected


def test_extract_with_rootfs_url(built: Built, full: Path, tmp_path: Path) -> None:
    out = out_dir(tmp_path) / "minimal.iso"
    ok(run_main("iso", "extract", "minimal-iso", "--rootfs-url", URL, str(full), str(out)))
    expected = built.pair.expected(built.minimal, URL)
    assert out.read_bytes() == expected
    res = ok(run_main("iso", "extract", "minimal-iso", "--rootfs-url", URL, str(full)))
    assert res.stdout == expected
    prof = built.pair.profile
    shown = ok(run_main("iso", "kargs", "show", str(out))).stdout.decode().strip()
    assert shown.endswith(f" {prof.live_rootfs_url_karg}={URL}")
    default = ok(run_main("iso", "kargs", "show", "-d", str(out))).stdout.decode().strip()
    assert default == built.pair.new_default()


def test_output_rootfs(built: Built, full: Path, tmp_path: Path) -> None:
    d = out_dir(tmp_path)
    rootfs = d / "rootfs.img"
    ok(run_main("iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(full), "-"))
    assert rootfs.read_bytes() == built.pair.rootfs
    pxe = d / "pxe"
    ok(run_main("iso", "extract", "pxe", "-o", str(pxe), str(full)))
    assert (pxe / "live-rootfs.img").read_bytes() == rootfs.read_bytes()
    # An existing rootfs path: File exists, and it is left as it was.
    rootfs.write_bytes(b"mine")
    out = d / "m.iso"
    fail(
        run_main(
            "iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(full), str(out)
        ),
        "File exists",
    )
    assert rootfs.read_bytes() == b"mine"
    assert not out.exists()


def test_existing_output(built: Built, full: Path, tmp_path: Path) -> None:
    out = out_dir(tmp_path) / "minimal.iso"
    out.write_bytes(b"precious")
    fail(run_main("iso", "extract", "minimal-iso", str(full), str(out)), "File exists")
    assert out.read_bytes() == b"precious"
    assert temps(out.parent) == []


def test_customized_iso_refused(built: Built, full: Path, tmp_path: Path) -> None:
    d = out_dir(tmp_path)
    message = "Cannot operate on ISO with embedded customizations."
    for edit in (("iso", "kargs", "modify", "-a", "foo=bar"), ("iso", "ignition", "embed")):
        ok(run_main(*edit, str(full), input=CONFIG))
        before = sha(full)
        res = fail(run_main("iso", "extract", "minimal-iso", str(full), str(d / "m.iso")), message)
        assert "Reset it with `nestos-installer iso reset` and try again." in res.stderr.decode()
        fail(run_main("iso", "extract", "minimal-iso", str(full)), message)
        assert sha(full) == before
        assert list(d.iterdir()) == []
        ok(run_main("iso", "reset", str(full)))
    assert sha(full) == sha(built.pair.full.path)
    ok(run_main("iso", "extract", "minimal-iso", str(full), str(d / "m.iso")))


def test_corrupted_full_iso(built: Built, full: Path, tmp_path: Path) -> None:
    """Like upstream's test: rename the liveiso karg everywhere → wrong final digest."""
    prof = built.pair.profile
    karg = prof.liveiso_karg.encode()
    bad = karg.replace(b"liveiso", b"livejso")
    data = full.read_bytes()
    assert karg in data
    full.write_bytes(data.replace(karg, bad))
    before = sha(full)
    d = out_dir(tmp_path)
    rootfs = d / "rootfs.img"
    for target in (str(d / "m.iso"), "-"):
        res = run_main(
            "iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(full), target
        )
        fail(res, "wrong final digest: expected ")
        assert "unpacking miniso" in res.stderr.decode()
        assert res.stdout == b""
        assert list(d.iterdir()) == []  # the rootfs we started is removed again
    assert sha(full) == before


def test_rootfs_url_with_whitespace(full: Path, tmp_path: Path) -> None:
    d = out_dir(tmp_path)
    for url in ("http://a b", " http://a", "http://a\t"):
        fail(
            run_main("iso", "extract", "minimal-iso", "--rootfs-url", url, str(full), str(d / "m")),
            f"forbidden whitespace found in '{url}'",
        )
    assert list(d.iterdir()) == []


def test_iso_without_miniso(tmp_path: Path) -> None:
    iso = build_live_iso(
        tmp_path / "old.iso", LiveIsoSpec(extra_files={"images/pxeboot/rootfs.img": b"r"})
    )
    d = out_dir(tmp_path)
    fail(
        run_main(
            "iso",
            "extract",
            "minimal-iso",
            "--output-rootfs",
            str(d / "r"),
            str(iso.path),
            str(d / "m"),
        ),
        "This ISO image does not support extracting a minimal ISO.",
    )
    assert list(d.iterdir()) == []


def test_iso_without_kargs(tmp_path: Path) -> None:
    iso = build_live_iso(tmp_path / "s390x.iso", LiveIsoSpec(kargs="none"))
    fail(
        run_main("iso", "extract", "minimal-iso", str(iso.path), str(tmp_path / "m")),
        "No karg embed areas found",
    )
    plain = tmp_path / "plain.iso"
    build_plain_iso(plain, {"README": b"hi"})
    fail(
        run_main("iso", "extract", "minimal-iso", str(plain), "-"), "Unrecognized CoreOS ISO image."
    )


def test_minimal_without_liveiso_karg(tmp_path: Path) -> None:
    """A packed minimal ISO whose kargs lack the liveiso karg: clear error, no output."""
    spec = LiveIsoSpec(default_kargs="ignition.firstboot ignition.platform.id=metal")
    pair, _ = build_pair(tmp_path, spec)
    d = out_dir(tmp_path)
    fail(
        run_main("iso", "extract", "minimal-iso", str(pair.full.path), str(d / "m.iso")),
        "minimal ISO does not have nestos.liveiso= karg",
    )
    assert list(d.iterdir()) == []


def _raw_header(table: bytes) -> bytes:
    return b"MINISO\0\0\x01\x01t" + table


HOSTILE = [
    ("empty table", _raw_header(b"\x00" + bytes(32) + b"\x00"), "table is empty"),
    (
        "unsorted",
        MinisoData([Entry(30, 20, 10), Entry(20, 20, 10)], bytes(32), b"").encode(),
        "Files at offsets 61440 and 40960 overlap",
    ),
    (
        "overlapping",
        MinisoData([Entry(20, 20, 4097), Entry(22, 20, 10)], bytes(32), b"").encode(),
        "Files at offsets 40960 and 45056 overlap",
    ),
    (
        "length past the ISO",
        MinisoData([Entry(20, 200, 0xFFFF_FFFF)], bytes(32), b"").encode(),
        "extends beyond the full ISO",
    ),
    (
        "sector past the ISO",
        MinisoData([Entry(20, 0xFFFF_FFFF, 1)], bytes(32), b"").encode(),
        "extends beyond the full ISO",
    ),
    ("huge varint", _raw_header(b"\xfd" + struct.pack("<Q", 2**63)), "table entries length"),
    ("u64 sector", _raw_header(b"\x01\xfd" + struct.pack("<Q", 2**40) + b"\0\0"), "out of range"),
    ("bad magic", b"MINISOX\0\x01", "not a miniso file!"),
    ("bad version", b"MINISO\0\0\x07\x00", "incompatible miniso file version: 1 vs 7"),
    ("zeros", b"", "not a miniso file!"),
]


@pytest.mark.parametrize(("name", "raw", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_miniso_dat(
    built: Built, full: Path, tmp_path: Path, *, name: str, raw: bytes, message: str
) -> None:
    put_miniso(full, built.pair.profile, raw)
    before = sha(full)
    d = out_dir(tmp_path)
    for target in (str(d / "m.iso"), "-"):
        res = run_main(
            "iso", "extract", "minimal-iso", "--output-rootfs", str(d / "r"), str(full), target
        )
        fail(res, message)
        assert "reading miniso data file" in res.stderr.decode()
        assert res.stdout == b""
        assert list(d.iterdir()) == []  # not even the rootfs: the table is checked first
    assert sha(full) == before


def test_hostile_xz_stream(built: Built, full: Path, tmp_path: Path) -> None:
    prof = built.pair.profile
    good = read_miniso(full, prof)
    d = out_dir(tmp_path)
    for packed, message in (
        (good.xzpacked[:-40], "decompressing packed data"),
        (b"\xfd7zXZ\0garbage", "decompressing packed data"),
        (good.xzpacked[:0], "decompressing packed data"),
    ):
        bad = MinisoData(good.entries, good.digest, packed, good.app_version)
        put_miniso(full, prof, bad.encode())
        res = fail(run_main("iso", "extract", "minimal-iso", str(full), str(d / "m.iso")), message)
        assert "unpacking miniso" in res.stderr.decode()
        assert list(d.iterdir()) == []


def test_real_cli_refuses_tty_and_help_width(full: Path) -> None:
    for cmd in (
        ["iso", "extract", "pxe"],
        ["iso", "extract", "minimal-iso"],
        ["pack", "minimal-iso"],
    ):
        res = run_cli(*cmd, "-h")
        assert res.returncode == 0
        assert max(len(line) for line in res.stdout.decode().splitlines()) <= 80
    res = run_cli("iso", "--help")
    assert b"extract" in res.stdout
    # stdout as a pseudo-terminal: refused before any work.
    import pty

    master, slave = pty.openpty()
    try:
        res = run_cli("iso", "extract", "minimal-iso", str(full), stdout=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 1
    assert b"Refusing to write binary data to terminal" in res.stderr


# ---- iso extract pxe --------------------------------------------------------------------


def test_extract_pxe(built: Built, full: Path, tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    res = ok(run_main("iso", "extract", "pxe", "-o", str(d), str(full)))
    names = ["live-initrd.img", "live-rootfs.img", "live-vmlinuz"]
    assert sorted(res.stdout.decode().splitlines()) == [str(d / n) for n in names]
    assert (d / "live-vmlinuz").read_bytes() == b"kernel\n"
    assert (d / "live-initrd.img").read_bytes() == b"initrd\n"
    assert (d / "live-rootfs.img").read_bytes() == built.pair.rootfs
    # Second run: File exists on the first file; existing files untouched.
    (d / "live-initrd.img").write_bytes(b"mine")
    fail(run_main("iso", "extract", "pxe", "-o", str(d), str(full)), "File exists")
    assert (d / "live-initrd.img").read_bytes() == b"mine"


def test_extract_pxe_default_dir(full: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = run_cli("iso", "extract", "pxe", str(full), cwd=cwd)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in cwd.iterdir()) == [
        "live-initrd.img",
        "live-rootfs.img",
        "live-vmlinuz",
    ]
    assert "./live-vmlinuz" in res.stdout.decode().splitlines()


def test_extract_pxe_unrecognized(tmp_path: Path) -> None:
    plain = tmp_path / "plain.iso"
    build_plain_iso(plain, {"README": b"hi", "IMAGES/OTHER": b"x"})
    d = tmp_path / "out"
    fail(
        run_main("iso", "extract", "pxe", "-o", str(d), str(plain)), "Unrecognized CoreOS ISO image"
    )
    assert not d.exists()
    fail(
        run_main("iso", "extract", "pxe", str(tmp_path / "missing.iso")),
        "No such file or directory",
    )


def test_extract_pxe_skips_subdirs(tmp_path: Path) -> None:
    iso = build_live_iso(
        tmp_path / "x.iso",
        LiveIsoSpec(
            extra_files={"images/pxeboot/sub/file": b"s", "images/pxeboot/kernel.img": b"k"}
        ),
    )
    d = tmp_path / "o"
    ok(run_main("iso", "extract", "pxe", "-o", str(d), str(iso.path)))
    assert sorted(p.name for p in d.iterdir()) == [
        "x-initrd.img",
        "x-kernel.img",
        "x-vmlinuz",
    ]


def test_kargs_json_of_output_is_valid_json(built: Built, full: Path, tmp_path: Path) -> None:
    out = out_dir(tmp_path) / "m.iso"
    ok(run_main("iso", "extract", "minimal-iso", "--rootfs-url", URL, str(full), str(out)))
    prof = built.pair.profile
    with open(out, "rb") as f:
        fs = IsoFs(f.fileno())
        rec = fs.get_file(f"{prof.iso_dir}/KARGS.JSO")
        obj = json.loads(fs.read_file(rec))
    assert obj["default"] == built.pair.new_default()
    assert list(obj) == ["default", "files", "size"]
