"""Hostile input and faults (issue 14): endless inputs, full or closed outputs, control
characters, late validation, secrets on disk, odd paths, extraction atomicity.

Every case asserts the `Error:` text, the exit code, and that inputs and any earlier
output are intact; endless inputs run under a 1 GiB address-space cap, so an
unbounded read shows up as a MemoryError traceback instead of an OOM kill.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.formats import cpio
from nestos_inst.formats.initrd import compress, read_initrd, write_initrd
from tests.helpers.cli import REPO
from tests.helpers.hostile import (
    cap_memory,
    endless_fifo,
    fill,
    listing,
    run_capped,
    run_to_closed_pipe,
    run_to_full,
    tiny_fs,
)
from tests.helpers.isomedia import CONFIG, build_live_iso

NETDIR = "etc/nestos-firstboot-network"
KEYFILE = b"[connection]\nid=secret\n[wifi-security]\npsk=hunter2\n"


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    """Modes asserted below (0644 for files we make, 0600 for secrets) assume 022."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def fails(
    proc: subprocess.CompletedProcess[bytes], message: str, rc: int = 1
) -> subprocess.CompletedProcess[bytes]:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == rc, err
    assert "Traceback" not in err, err
    assert message in err, err
    assert "\nError: " in "\n" + err if rc == 1 else "error:" in err, err
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A live ISO with an embedded config and keyfile, a wrapped initrd, a keyfile."""
    work = tmp_path_factory.mktemp("hostile")
    iso = build_live_iso(work / "live.iso").path
    keyfile = work / "wifi.nmconnection"
    keyfile.write_bytes(KEYFILE)
    config = work / "config.ign"
    config.write_bytes(CONFIG)
    assert run_capped("iso", "ignition", "embed", "-i", config, iso).returncode == 0
    assert run_capped("iso", "network", "embed", "-k", keyfile, iso).returncode == 0
    initrd = work / "wrapped.img"
    initrd.write_bytes(write_initrd({"config.ign": CONFIG, f"{NETDIR}/wifi.nmconnection": KEYFILE}))
    yield {"iso": iso, "keyfile": keyfile, "config": config, "initrd": initrd, "dir": work}


# ---- class 1: unbounded reads ------------------------------------------------------------


def _endless_cases(media: dict[str, Path], src: Path, target: Path) -> list[tuple[list[str], str]]:
    return [
        (["pxe", "ignition", "wrap", "-i", str(src)], "larger than the limit of 64 MiB"),
        (["pxe", "network", "wrap", "-k", str(src)], "larger than the limit of 1 MiB"),
        (
            ["install", "--dry-run", "-i", str(src), "-f", str(media["iso"]), str(target)],
            "larger than the limit of 64 MiB",
        ),
        (["install", "--config-file", str(src), str(target)], "larger than the limit of 1 MiB"),
        (["iso", "ignition", "embed", "-i", str(src), str(media["iso"])], "limit of 64 MiB"),
        (["iso", "network", "embed", "-f", "-k", str(src), str(media["iso"])], "limit of 1 MiB"),
        (
            ["install", "--dry-run", "--keyring", str(src), "-f", str(media["iso"]), str(target)],
            "larger than the limit of 16 MiB",
        ),
    ]


@pytest.mark.parametrize("source", ["dev-zero", "fifo"])
def test_endless_inputs_have_a_limit(media: dict[str, Path], tmp_path: Path, source: str) -> None:
    """/dev/zero and a FIFO that never ends: a clear error at the documented limit,
    memory bounded (1 GiB cap), nothing written, the target untouched."""
    target = tmp_path / "disk.img"
    target.write_bytes(b"\x5a" * 65536)
    before, iso_before = sha(target), sha(media["iso"])
    for i in range(7):
        if source == "dev-zero":
            args, message = _endless_cases(media, Path("/dev/zero"), target)[i]
            proc = run_capped(*args)
        else:
            with endless_fifo(tmp_path) as fifo:
                args, message = _endless_cases(media, fifo, target)[i]
                proc = run_capped(*args)
            (tmp_path / "endless.fifo").unlink()
        fails(proc, message)
        assert sha(target) == before
        assert sha(media["iso"]) == iso_before
        assert not (tmp_path / "out.img").exists()


def test_endless_stdin_is_bounded(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = run_capped(
            "pxe", "ignition", "wrap", "-o", tmp_path / "out.img", stdin=zero.fileno()
        )
    fails(proc, "Error: reading stdin")
    assert b"larger than the limit of 64 MiB" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_directory_as_input(media: dict[str, Path], tmp_path: Path) -> None:
    fails(run_capped("pxe", "ignition", "wrap", "-i", tmp_path), "Is a directory (os error 21)")
    fails(
        run_capped("install", "--config-file", tmp_path, tmp_path / "t"),
        "Is a directory (os error 21)",
    )


# ---- class 5: control characters -------------------------------------------------------


@pytest.mark.parametrize("karg", ["foo\nmenuentry evil {", "a\tb", "x\x1b[2J", "nul\x7f"])
def test_iso_kargs_control_characters_refused(media: dict[str, Path], karg: str) -> None:
    before = sha(media["iso"])
    proc = fails(
        run_capped("iso", "kargs", "modify", "-a", karg, media["iso"]),
        "contains a control character",
    )
    assert b"\n" not in proc.stderr.split(b"'")[1]  # the message shows it escaped
    assert sha(media["iso"]) == before


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--append-karg", "quiet\ninitrd /evil", "contains a control character"),
        ("--delete-karg", "rhgb\r", "contains a control character"),
        ("--platform", "qemu\nlinux /evil", "contains a control character"),
        ("--platform", "qemu extra=1", "invalid platform ID 'qemu extra=1'"),
        ("--platform", "a=b", "invalid platform ID"),
        ("--firstboot-args", 'ip=dhcp"\nset evil', "contains a control character"),
    ],
)
def test_install_control_characters_refused_before_any_write(
    media: dict[str, Path], tmp_path: Path, flag: str, value: str, message: str
) -> None:
    """Refused while validating arguments, with --dry-run too."""
    target = tmp_path / "disk.img"
    target.write_bytes(b"\x5a" * 65536)
    for dry in ([], ["--dry-run"]):
        proc = run_capped("install", *dry, flag, value, "-f", media["iso"], "--insecure", target)
        fails(proc, message)
    assert target.read_bytes() == b"\x5a" * 65536


def test_install_config_file_control_characters(media: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "disk.img"
    target.write_bytes(b"\x5a" * 4096)
    cfg = tmp_path / "c.yaml"
    cfg.write_text('append-karg: ["ok", "bad\\nline"]\n')
    fails(run_capped("install", "--config-file", cfg, target), "contains a control character")
    assert target.read_bytes() == b"\x5a" * 4096


# ---- class 6: late validation ----------------------------------------------------------


def test_source_is_target_refused(media: dict[str, Path], tmp_path: Path) -> None:
    """The same file by path, symlink or hard link is refused before anything is
    written (and by --dry-run)."""
    image = tmp_path / "image.raw"
    image.write_bytes(os.urandom(1 << 16))
    before = sha(image)
    link = tmp_path / "link.raw"
    link.symlink_to(image)
    hard = tmp_path / "hard.raw"
    os.link(image, hard)
    for src, dst in ((image, image), (link, image), (image, link), (hard, image)):
        for dry in ([], ["--dry-run"]):
            proc = run_capped("install", *dry, "--insecure", "-f", src, dst)
            fails(proc, "the image is the destination")
    assert sha(image) == before


@pytest.mark.root
def test_source_is_target_loop_backing_file(tmp_path: Path) -> None:
    """A loop device backed by the image itself is the image."""
    from tests.helpers.loop import loop_device

    image = tmp_path / "image.raw"
    image.write_bytes(os.urandom(1 << 20))
    before = sha(image)
    with loop_device(image, partitions=False) as dev:
        fails(run_capped("install", "--insecure", "-f", image, dev), "the image is the destination")
        fails(run_capped("install", "--insecure", "-f", dev, image), "the image is the destination")
    assert sha(image) == before


# ---- class 7: output errors ------------------------------------------------------------


def _stdout_commands(media: dict[str, Path], tmp_path: Path) -> list[list[str]]:
    iso, initrd, keyfile = str(media["iso"]), str(media["initrd"]), str(media["keyfile"])
    target = tmp_path / "disk.img"
    target.write_bytes(bytes(4096))
    return [
        ["--help"],
        ["-V"],
        ["install", "--help"],
        ["iso", "kargs", "show", iso],
        ["iso", "ignition", "show", iso],
        ["iso", "network", "extract", iso],
        ["iso", "ignition", "embed", "-f", "-i", str(media["config"]), "-o", "-", iso],
        ["iso", "kargs", "modify", "-a", "x=1", "-o", "-", iso],
        ["iso", "extract", "pxe", "-o", str(tmp_path / "pxe"), iso],
        ["pxe", "ignition", "wrap", "-i", str(media["config"])],
        ["pxe", "ignition", "unwrap", initrd],
        ["pxe", "network", "wrap", "-k", keyfile],
        ["pxe", "network", "unwrap", initrd],
        ["dev", "show", "iso", iso],
        ["dev", "show", "initrd", initrd],
        ["pack", "example-config"],
        ["install", "--dry-run", "--insecure", "-f", iso, str(target)],
    ]


def test_full_stdout_is_an_error_line(media: dict[str, Path], tmp_path: Path) -> None:
    """stdout on /dev/full: every command (help included) says so in one `Error:`
    line, exit 1, no traceback."""
    for i, args in enumerate(_stdout_commands(media, tmp_path)):
        proc = run_to_full(args)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (args, err)
        assert (
            err.startswith("Error: writing to stdout") or "\nError: writing to stdout\n" in err
        ), (args, err)
        assert "No space left on device (os error 28)" in err, (args, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (args, err)
        # `iso extract pxe` printed nothing whole: whatever it copied is removed again.
        for p in tmp_path.glob("pxe/*"):
            p.unlink()
        del i


def test_closed_stdout_pipe(media: dict[str, Path], tmp_path: Path) -> None:
    """A closed pipe: show-type commands die silently by SIGPIPE
    (docs/compat.md#exit-codes), the others report the broken pipe; never a traceback."""
    for args in _stdout_commands(media, tmp_path):
        proc = run_to_closed_pipe(args)
        err = proc.stderr.decode()
        if proc.returncode == -signal.SIGPIPE:
            assert err == "", (args, err)
        else:
            assert proc.returncode == 1, (args, err)
            assert "Error: writing to stdout" in err, (args, err)
            assert "Broken pipe (os error 32)" in err, (args, err)
        for p in tmp_path.glob("pxe/*"):
            p.unlink()


@pytest.mark.root
@pytest.mark.parametrize("kind", ["ignition", "network"])
def test_wrap_output_on_full_disk(media: dict[str, Path], kind: str) -> None:
    """ENOSPC on `-o`: an `Error:` line, no partial file, the previous output intact."""
    with tiny_fs(64) as fs:
        out = fs / "out.img"
        out.write_bytes(b"previous output\n")
        fill(fs)
        big = media["dir"] / "big.ign"
        big.write_bytes(b'{"x": "' + os.urandom(200_000).hex().encode() + b'"}')
        if kind == "ignition":
            args = ["pxe", "ignition", "wrap", "-i", str(big), "-o", str(out)]
        else:
            keyfile = media["dir"] / "big.nmconnection"
            keyfile.write_bytes(os.urandom(600_000))
            args = ["pxe", "network", "wrap", "-k", str(keyfile), "-o", str(out)]
        fails(run_capped(*args), f"Error: writing {out}")
        assert out.read_bytes() == b"previous output\n"
        assert sorted(p.name for p in fs.iterdir()) == ["filler", "out.img"]


@pytest.mark.root
def test_keyfile_extract_on_full_disk(media: dict[str, Path]) -> None:
    """`-C` on a full filesystem: no 0-byte or partial keyfile stays behind."""
    with tiny_fs(64) as fs:
        fill(fs)
        out = fs / "keys"
        for args in (
            ["iso", "network", "extract", "-C", str(out), str(media["iso"])],
            ["pxe", "network", "unwrap", "-C", str(out), str(media["initrd"])],
        ):
            proc = run_capped(*args)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.startswith(b"Error: "), proc.stderr
            assert b"No space left on device" in proc.stderr, proc.stderr
            assert sorted(p.name for p in fs.iterdir()) == ["filler"]


@pytest.mark.root
def test_extract_pxe_on_full_disk(media: dict[str, Path]) -> None:
    """`iso extract pxe` onto a full filesystem: an `Error:` line, no 0-byte or partial
    file, nothing from earlier files of the same run either."""
    with tiny_fs(64) as fs:
        fill(fs)
        out = fs / "pxe"
        proc = run_capped("iso", "extract", "pxe", "-o", out, media["iso"])
        fails(proc, "No space left on device")
        assert sorted(p.name for p in fs.iterdir()) == ["filler"]


@pytest.mark.root
def test_iso_output_on_full_disk(media: dict[str, Path]) -> None:
    """`-o PATH` for an ISO edit onto a full filesystem: an `Error:` line, no output,
    no temporary file, the input unchanged."""
    before = sha(media["iso"])
    with tiny_fs(256) as fs:
        out = fs / "new.iso"
        for args in (
            ["iso", "kargs", "modify", "-a", "x=1"],
            ["iso", "reset"],
            ["iso", "ignition", "embed", "-f", "-i", str(media["config"])],
        ):
            fails(run_capped(*args, "-o", out, media["iso"]), "No space left on device")
            assert list(fs.iterdir()) == []
    assert sha(media["iso"]) == before


def test_extract_pxe_refuses_existing_before_writing(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "pxe"
    out.mkdir()
    (out / "live-vmlinuz").write_bytes(b"mine")
    fails(run_capped("iso", "extract", "pxe", "-o", out, media["iso"]), "File exists")
    assert listing(out) == {"live-vmlinuz": (0o644, b"mine")}


def test_wrap_replaces_existing_output_only_when_complete(
    media: dict[str, Path], tmp_path: Path
) -> None:
    """A failing wrap leaves an existing `-o` file as it was (no truncation first)."""
    out = tmp_path / "out.img"
    out.write_bytes(b"previous output\n")
    fails(
        run_capped("pxe", "ignition", "wrap", "-i", tmp_path / "missing", "-o", out),
        "No such file or directory",
    )
    assert out.read_bytes() == b"previous output\n"
    assert run_capped("pxe", "ignition", "wrap", "-i", media["config"], "-o", out).returncode == 0
    assert read_initrd(out.read_bytes()) == {"config.ign": CONFIG}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]


# ---- class 8: secrets on disk ----------------------------------------------------------


def test_secret_outputs_are_0600(media: dict[str, Path], tmp_path: Path) -> None:
    wrapped = tmp_path / "ign.img"
    assert (
        run_capped("pxe", "ignition", "wrap", "-i", media["config"], "-o", wrapped).returncode == 0
    )
    net = tmp_path / "net.img"
    assert run_capped("pxe", "network", "wrap", "-k", media["keyfile"], "-o", net).returncode == 0
    out = tmp_path / "x"
    assert run_capped("dev", "extract", "initrd", "-C", out, media["initrd"]).returncode == 0
    keys = tmp_path / "keys"
    assert run_capped("pxe", "network", "unwrap", "-C", keys, media["initrd"]).returncode == 0
    for path in (wrapped, net, out / "config.ign", out / NETDIR / "wifi.nmconnection",
                 keys / "wifi.nmconnection"):  # fmt: skip
        assert path.stat().st_mode & 0o777 == 0o600, path


# ---- class 9: odd paths and encodings --------------------------------------------------


def test_directory_where_an_iso_is_expected(tmp_path: Path) -> None:
    for args in (
        ["iso", "kargs", "show", str(tmp_path)],
        ["iso", "ignition", "embed", "-i", "/dev/null", str(tmp_path)],
        ["iso", "reset", str(tmp_path)],
        ["dev", "show", "iso", str(tmp_path)],
        ["iso", "extract", "pxe", "-o", str(tmp_path / "o"), str(tmp_path)],
    ):
        proc = run_capped(*args)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (args, err)
        assert err.startswith("Error: "), (args, err)
        assert "Is a directory" in err, (args, err)
        assert "Traceback" not in err


def test_non_utf8_kargs(media: dict[str, Path]) -> None:
    before = sha(media["iso"])
    bad = os.fsdecode(b"quiet\xff")
    fails(run_capped("iso", "kargs", "modify", "-a", bad, media["iso"]), "is not valid UTF-8")
    fails(run_capped("iso", "kargs", "modify", "-d", bad, media["iso"]), "is not valid UTF-8")
    assert sha(media["iso"]) == before


def test_non_utf8_file_names(media: dict[str, Path], tmp_path: Path) -> None:
    """Keyfile names become archive member names, which must be UTF-8 without
    control characters: refused with the name shown escaped, no output written."""
    out = tmp_path / "net.img"
    for raw, message in (
        (b"caf\xe9.nmconnection", "keyfile name 'caf\\xe9.nmconnection' is not valid UTF-8"),
        (b"two\nlines.nmconnection", "keyfile name 'two\\nlines.nmconnection' contains a"),
    ):
        keyfile = tmp_path / os.fsdecode(raw)
        keyfile.write_bytes(KEYFILE)
        fails(run_capped("pxe", "network", "wrap", "-k", keyfile, "-o", out), message)
        assert not out.exists()


# ---- class 10: extraction atomicity ----------------------------------------------------


def _initrd(members: list[tuple[str, bytes]]) -> bytes:
    """An archive that may hold the same path twice (write_archive takes a dict)."""
    parts = b"".join(
        cpio.write_archive({name: data}).removesuffix(_trailer()) for name, data in members
    )
    return compress(parts + _trailer())


def _trailer() -> bytes:
    return cpio.write_archive({})


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("a/config.ign", b"1"), ("a/./config.ign", b"2")], "would both be extracted to"),
        ([("etc/x", b"1"), ("etc/x/y", b"2")], "is a file, but 'etc/x/y' needs it"),
        ([("ok", b"1"), ("../escape", b"2")], "contains path traversal"),
    ],
)
def test_extract_checks_every_member_first(
    tmp_path: Path, members: list[tuple[str, bytes]], message: str
) -> None:
    src = tmp_path / "in.img"
    src.write_bytes(_initrd(members))
    dest = tmp_path / "out"
    fails(run_capped("dev", "extract", "initrd", "-C", dest, src), message)
    assert not dest.exists()


def test_extract_existing_target_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.img"
    src.write_bytes(write_initrd({"a": b"1", "b": b"2", "c": b"3"}))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "b").write_bytes(b"mine")
    fails(run_capped("dev", "extract", "initrd", "-C", dest, src), "File exists")
    assert listing(dest) == {"b": (0o644, b"mine")}


@pytest.mark.root
def test_extract_on_full_disk_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.img"
    src.write_bytes(write_initrd({"small": b"1", "zbig": os.urandom(200_000)}))
    with tiny_fs(64) as fs:
        fill(fs)
        os.truncate(fs / "filler", (fs / "filler").stat().st_size - 8192)  # room for "small"
        dest = fs / "out"
        proc = run_capped("dev", "extract", "initrd", "-C", dest, src)
        fails(proc, "No space left on device")
        assert sorted(p.name for p in fs.iterdir()) == ["filler"]


# ---- class 4: metadata pointing at the ISO's own structures ----------------------------

_WRITERS = [
    ["iso", "reset"],
    ["iso", "kargs", "reset"],
    ["iso", "kargs", "modify", "-a", "x=1"],
    ["iso", "ignition", "embed", "-f", "-i", "/dev/null"],
    ["iso", "ignition", "remove"],
    ["iso", "network", "remove"],
    ["iso", "embed", "-f", "-c", "/dev/null"],
    ["iso", "remove"],
]


@pytest.fixture(scope="module")
def legacy_iso(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int, list[int]]:
    from tests.helpers.isomedia import LiveIsoSpec

    built = build_live_iso(
        tmp_path_factory.mktemp("legacy") / "legacy.iso", LiveIsoSpec(kargs="legacy")
    )
    assert built.default_offset is not None
    return built.path, built.spec.karg_size, built.default_offset, built.karg_offsets


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("pvd", "overlaps the system area or volume descriptors"),
        ("system-area", "overlaps the system area or volume descriptors"),
        ("initrd", "overlaps initrd embed area"),
        ("twice", "overlaps karg embed area"),
        ("end", "beyond end of image"),
    ],
)
def test_every_writer_refuses_areas_on_iso_structures(
    legacy_iso: tuple[Path, int, int, list[int]], tmp_path: Path, where: str, message: str
) -> None:
    """A karg slot pointing at the volume descriptors, the system area, the initrd
    area, another slot or past the end: every write command, in every output mode,
    refuses before writing a byte (no output file, the image unchanged)."""
    from tests.helpers.isomedia import write_karg_header

    src, length, default, offsets = legacy_iso
    iso = tmp_path / "crafted.iso"
    iso.write_bytes(src.read_bytes())
    size = iso.stat().st_size
    ign = _file_extent(iso, "IMAGES/IGNITION.IMG")
    bad = {
        "pvd": [offsets[0], 16 * 2048],
        "system-area": [512, offsets[0]],
        "initrd": [offsets[0], ign + 100],
        "twice": [offsets[0], offsets[0] + 10],
        "end": [offsets[0], size - 10],
    }[where]
    write_karg_header(iso, length, default, bad)
    before = sha(iso)
    for args in _WRITERS:
        for mode in ([], ["-o", str(tmp_path / "out.iso")], ["-o", "-"]):
            proc = run_capped(*args, *mode, iso)
            fails(proc, message)
            assert proc.stdout == b""
            assert not (tmp_path / "out.iso").exists()
    assert sha(iso) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.iso"]


def _file_extent(iso: Path, name: str) -> int:
    from nestos_inst.formats.iso9660 import IsoFs

    fd = os.open(iso, os.O_RDONLY)
    try:
        return IsoFs(fd).get_file(name).offset
    finally:
        os.close(fd)


def test_regions_inside_descriptors_refused_by_isoedit(tmp_path: Path) -> None:
    """The write layer itself refuses the reserved area, whatever the caller found."""
    from nestos_inst.errors import FormatError
    from nestos_inst.formats import isoedit

    iso = build_live_iso(tmp_path / "live.iso").path
    before = sha(iso)
    fd = os.open(iso, os.O_RDWR)
    try:
        with pytest.raises(FormatError, match="overlaps the system area"):
            isoedit.write_in_place(fd, [(16 * 2048 + 1, b"x")], str(iso))
        with pytest.raises(FormatError, match="overlaps the system area"):
            isoedit.write_copy(fd, [(100, b"x")], str(tmp_path / "o.iso"), ".t")
    finally:
        os.close(fd)
    assert sha(iso) == before
    assert not (tmp_path / "o.iso").exists()


def test_non_utf8_install_values(tmp_path: Path) -> None:
    """argv (or /proc/cmdline) bytes that are not UTF-8 are named, not a traceback."""
    target = tmp_path / "disk.img"
    target.write_bytes(b"\x5a" * 4096)
    bad = os.fsdecode(b"https://example.com/\xff.raw.xz")
    proc = fails(run_capped("install", "--image-url", bad, target), "is not valid UTF-8")
    assert b"invalid value for `image-url`: 'https://example.com/\\xff.raw.xz'" in proc.stderr
    fails(run_capped("install", "--append-karg", os.fsdecode(b"a\xfe"), target), "valid UTF-8")
    assert target.read_bytes() == b"\x5a" * 4096


def test_endless_ca_file(tmp_path: Path) -> None:
    """SSL_CERT_FILE naming an endless source: bounded, named in the error."""
    env = dict(os.environ, SSL_CERT_FILE="/dev/zero")
    proc = subprocess.run(
        [sys.executable, "-m", "nestos_inst", "download", "-C", str(tmp_path),
         "--stream-base-url", "https://127.0.0.1:9/"],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
        preexec_fn=cap_memory,
        check=False,
    )  # fmt: skip
    fails(proc, "loading trusted certificates from /dev/zero")
    assert b"larger than the limit of 16 MiB" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_yaml_escape_beyond_unicode(tmp_path: Path) -> None:
    """Found by `make fuzz`: PyYAML's scanner raises ValueError/OverflowError (not
    YAMLError) on `"\\U00110000"`; a config file like that is an error line."""
    target = tmp_path / "disk.img"
    target.write_bytes(b"\x5a" * 4096)
    for escape in ("\\U00110000", "\\Uffffffff"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f'platform: "{escape}"\n')
        proc = fails(
            run_capped("install", "--config-file", cfg, target), f"parsing config file {cfg}"
        )
        assert b"invalid escape sequence" in proc.stderr
    assert target.read_bytes() == b"\x5a" * 4096
