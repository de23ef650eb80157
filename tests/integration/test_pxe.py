"""`pxe ignition/network wrap/unwrap` and `dev show/extract initrd` through the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nestos_inst.formats import cpio
from nestos_inst.formats.initrd import read_initrd, write_initrd
from tests.helpers import initrdmedia
from tests.helpers.cli import REPO, run_cli

CONFIG = b'{"ignition": {"version": "3.0.0"}\n'
REFERENCE_SHA = "79b330cf3b6531fd1a5f9341b556031071c59b9fd88d4638f3bf004d0e2d48cf"
NETDIR = "etc/nestos-firstboot-network"


def ok(proc: subprocess.CompletedProcess[bytes]) -> bytes:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[bytes], message: str, rc: int = 1) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == rc, err
    assert message in err, err
    return err


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, so a test can assert that nothing changed."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "compressed.img"
    path.write_bytes(initrdmedia.compat_like_image())
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.ign"
    path.write_bytes(CONFIG)
    return path


# --- pxe ignition -------------------------------------------------------------------


def test_ignition_wrap_modes_identical(tmp_path: Path, config: Path) -> None:
    import hashlib

    out = tmp_path / "out.img"
    out.write_bytes(b"previous contents that are longer than the new archive" * 10)
    ok(run_cli("pxe", "ignition", "wrap", "-i", config, "-o", out))
    from_stdin = ok(run_cli("pxe", "ignition", "wrap", input=CONFIG))
    from_file = ok(run_cli("pxe", "ignition", "wrap", "-i", config))
    assert out.read_bytes() == from_stdin == from_file
    assert hashlib.sha256(from_stdin).hexdigest() == REFERENCE_SHA
    # the real tools read it back
    assert initrdmedia.cpio_list(initrdmedia.xzcat(from_stdin)) == ["config.ign"]
    ok(subprocess.run(["xz", "-t", "-"], input=from_stdin, capture_output=True, check=False))


def test_ignition_wrap_empty(tmp_path: Path) -> None:
    data = ok(run_cli("pxe", "ignition", "wrap", "-i", "/dev/null"))
    assert read_initrd(data) == {"config.ign": b""}


def test_ignition_unwrap(tmp_path: Path, image: Path, config: Path) -> None:
    wrapped = ok(run_cli("pxe", "ignition", "wrap", "-i", config))
    combined = tmp_path / "combined.img"
    combined.write_bytes(image.read_bytes() + wrapped)
    assert ok(run_cli("pxe", "ignition", "unwrap", combined)) == CONFIG
    assert ok(run_cli("pxe", "ignition", "unwrap", input=combined.read_bytes())) == CONFIG
    # the last copy wins, as in the kernel
    newer = write_initrd({"config.ign": b"{}"})
    assert ok(run_cli("pxe", "ignition", "unwrap", input=combined.read_bytes() + newer)) == b"{}"


def test_ignition_unwrap_missing(image: Path) -> None:
    fails(run_cli("pxe", "ignition", "unwrap", image), "couldn't find Ignition config in archive")


def test_ignition_wrap_missing_input_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    out.write_bytes(b"keep")
    err = fails(run_cli("pxe", "ignition", "wrap", "-i", tmp_path / "nope", "-o", out), "opening")
    assert "No such file or directory (os error 2)" in err
    assert out.read_bytes() == b"keep"


def test_wrap_refuses_terminal(config: Path) -> None:
    master, slave = os.openpty()
    try:
        proc = run_cli("pxe", "ignition", "wrap", "-i", config, stdout=slave)
        fails(proc, "Refusing to write binary data to terminal")
        proc = run_cli("pxe", "network", "wrap", "-k", config, stdout=slave)
        fails(proc, "Refusing to write binary data to terminal")
    finally:
        os.close(master)
        os.close(slave)


# --- pxe network ---------------------------------------------------------------------


@pytest.fixture
def keyfiles(tmp_path: Path) -> list[Path]:
    a = tmp_path / "a" / "eth0.nmconnection"
    b = tmp_path / "b" / "eth1.nmconnection"
    for path, body in [(a, b"[connection]\nid=eth0\n"), (b, b"[connection]\nid=eth1")]:
        path.parent.mkdir()
        path.write_bytes(body)
    return [a, b]


def test_network_wrap_unwrap(tmp_path: Path, keyfiles: list[Path]) -> None:
    out = tmp_path / "net.img"
    ok(run_cli("pxe", "network", "wrap", "-k", keyfiles[0], "--keyfile", keyfiles[1], "-o", out))
    data = out.read_bytes()
    assert data == ok(run_cli("pxe", "network", "wrap", "-k", keyfiles[0], "-k", keyfiles[1]))
    assert initrdmedia.cpio_list(initrdmedia.xzcat(data)) == [
        "etc",
        NETDIR,
        f"{NETDIR}/eth0.nmconnection",
        f"{NETDIR}/eth1.nmconnection",
    ]
    shown = ok(run_cli("pxe", "network", "unwrap", out))
    assert shown == (
        b"########## eth0.nmconnection ##########\n[connection]\nid=eth0\n"
        b"\n########## eth1.nmconnection ##########\n[connection]\nid=eth1"
    )
    assert ok(run_cli("pxe", "network", "unwrap", input=data)) == shown
    dest = tmp_path / "x" / "y"
    printed = ok(run_cli("pxe", "network", "unwrap", "-C", dest, out)).decode()
    assert printed == f"{dest}/eth0.nmconnection\n{dest}/eth1.nmconnection\n"
    assert (dest / "eth1.nmconnection").read_bytes() == b"[connection]\nid=eth1"
    assert (dest / "eth0.nmconnection").stat().st_mode & 0o777 == 0o600


def test_network_unwrap_existing_target_writes_nothing(
    tmp_path: Path, keyfiles: list[Path]
) -> None:
    data = ok(run_cli("pxe", "network", "wrap", "-k", keyfiles[0], "-k", keyfiles[1]))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "eth1.nmconnection").write_bytes(b"mine")
    before = snapshot(dest)
    proc = run_cli("pxe", "network", "unwrap", "-C", dest, input=data)
    err = fails(proc, f"opening {dest}/eth1.nmconnection")
    assert "File exists (os error 17)" in err
    assert snapshot(dest) == before


def test_network_wrap_duplicate_name(tmp_path: Path, keyfiles: list[Path]) -> None:
    dup = keyfiles[1].parent / keyfiles[0].name
    dup.write_bytes(b"other")
    out = tmp_path / "out.img"
    proc = run_cli("pxe", "network", "wrap", "-k", keyfiles[0], "-k", dup, "-o", out)
    fails(proc, "multiple input files named 'eth0.nmconnection'")
    assert not out.exists()


def test_network_wrap_requires_keyfile() -> None:
    fails(run_cli("pxe", "network", "wrap"), "-k/--keyfile", rc=2)


def test_network_unwrap_none(image: Path, tmp_path: Path) -> None:
    fails(run_cli("pxe", "network", "unwrap", image), "No embedded network settings.")
    fails(run_cli("pxe", "network", "unwrap", "-C", tmp_path / "d", image), "No embedded")
    assert not (tmp_path / "d").exists()


def test_network_unwrap_coreos_names() -> None:
    """Media laid out the CoreOS way keep their CoreOS member dir."""
    data = write_initrd({"etc/coreos-firstboot-network/c.nmconnection": b"c"})
    assert ok(run_cli("pxe", "network", "unwrap", input=data)) == (
        b"########## c.nmconnection ##########\nc"
    )


def test_network_unwrap_nestos_wins() -> None:
    data = write_initrd(
        {
            "etc/coreos-firstboot-network/c.nmconnection": b"c",
            f"{NETDIR}/n.nmconnection": b"n",
        }
    )
    assert ok(run_cli("pxe", "network", "unwrap", input=data)) == (
        b"########## n.nmconnection ##########\nn"
    )


# --- dev show / extract initrd --------------------------------------------------------

ALL10 = [
    f"{p}/{n}"
    for p in ["gzip", "uncompressed-1", "uncompressed-2", "xz", "zstd"]
    for n in ["hello", "world"]
]


def test_dev_show(image: Path) -> None:
    listing = "".join(f"{p}\n" for p in ALL10).encode()
    assert ok(run_cli("dev", "show", "initrd", image)) == listing
    assert ok(run_cli("dev", "show", "initrd", "-", input=image.read_bytes())) == listing
    hello = ok(run_cli("dev", "show", "initrd", image, "*hello")).decode().split()
    assert hello == [p for p in ALL10 if p.endswith("hello")]
    assert ok(run_cli("dev", "show", "initrd", image, "gzip/*")) == b"gzip/hello\ngzip/world\n"
    both = ok(run_cli("dev", "show", "initrd", image, "gzip*", "xz*")).decode().split()
    assert both == ["gzip/hello", "gzip/world", "xz/hello", "xz/world"]


def test_dev_show_invalid_glob(image: Path) -> None:
    err = fails(run_cli("dev", "show", "initrd", image, "***"), "invalid glob '***'")
    assert "wildcards are either regular `*` or recursive `**`" in err


def test_dev_extract(tmp_path: Path, image: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ok(run_cli("dev", "extract", "initrd", image, cwd=work))
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == ALL10
    assert (work / "zstd" / "world").read_bytes() == b"WORLD\n"
    before = snapshot(work)
    fails(run_cli("dev", "extract", "initrd", image, cwd=work), "exists")
    assert snapshot(work) == before

    out = ok(
        run_cli(
            "dev", "extract", "initrd", "-v", "-C", "d", "-", input=image.read_bytes(), cwd=work
        )
    )
    assert out.decode() == "".join(f"d/{p}\n" for p in ALL10)

    ok(run_cli("dev", "extract", "initrd", "-C", "g", image, "gzip/*", cwd=work))
    assert sorted(os.listdir(work / "g")) == ["gzip"]


@pytest.mark.parametrize(
    ("member", "shown"),
    [("/etc/adjtime", "/etc/adjtime"), ("../f", "../f"), ("a/../../f", "a/../../f")],
)
def test_dev_extract_traversal(tmp_path: Path, member: str, shown: str) -> None:
    data = write_initrd({"aaa-safe": b"x", member: b"contents\n"})
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    proc = run_cli("dev", "extract", "initrd", "-", input=data, cwd=work)
    fails(proc, f"path {shown} contains path traversal")
    assert snapshot(tmp_path) == {"work": b"<dir>", "work/inner": b"<dir>"}


def test_dev_extract_dot_prefix(tmp_path: Path) -> None:
    data = initrdmedia.gzip(cpio.write_archive({"./x/y": b"ok"}))
    ok(run_cli("dev", "extract", "initrd", "-C", tmp_path, "-", input=data))
    assert (tmp_path / "x" / "y").read_bytes() == b"ok"


GOOD = cpio.write_archive({"config.ign": b"{}", f"{NETDIR}/k": b"k"})


def _bad_media() -> list[tuple[bytes, str]]:
    namesize_past_end = GOOD[:94] + b"%08x" % 5000 + GOOD[102:]
    filesize_past_end = GOOD[:54] + b"%08x" % 5000 + GOOD[62:]
    non_utf8 = cpio.write_archive({"caf\xe9": b""}).replace(b"caf\xc3\xa9", b"caf\xff\xfe")
    return [
        (b"not an initrd at all, not at all" * 5, "invalid cpio magic"),
        (GOOD[:100], "unexpected end of cpio archive reading entry header"),
        (namesize_past_end, "unexpected end of cpio archive reading entry name"),
        (filesize_past_end, "unexpected end of cpio archive reading data of config.ign"),
        (non_utf8, "cpio entry name is not valid UTF-8"),
        (initrdmedia.gzip(GOOD)[:-9], "unexpected end of gzip stream"),
        (initrdmedia.xz(GOOD)[:-9], "unexpected end of xz stream"),
        (initrdmedia.zstd(GOOD)[:-9], "unexpected end of zstd stream"),
        (initrdmedia.xz(GOOD + b"junk"), "found trailing garbage inside compressed archive"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 20, "decoding gzip stream"),
        (b"\xfd7zXZ\x00garbage", "decoding xz stream"),
    ]


@pytest.mark.parametrize(("data", "message"), _bad_media())
def test_bad_input_writes_nothing(tmp_path: Path, data: bytes, message: str) -> None:
    dest = tmp_path / "dest"
    for argv in (
        ["dev", "extract", "initrd", "-C", str(dest), "-"],
        ["pxe", "network", "unwrap", "-C", str(dest)],
        ["dev", "show", "initrd", "-"],
        ["pxe", "ignition", "unwrap"],
    ):
        proc = run_cli(*argv, input=data)
        err = fails(proc, message)
        assert err.startswith("Error: reading initrd from stdin\n"), err
        assert proc.stdout == b""
    assert not dest.exists()


def test_missing_input_file(tmp_path: Path) -> None:
    err = fails(run_cli("dev", "show", "initrd", tmp_path / "no"), f"opening {tmp_path}/no")
    assert "No such file or directory (os error 2)" in err


# --- SIGPIPE rules (docs/compat.md#exit-codes) ----------------------------------------------------


def _closed_pipe_run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        return subprocess.run(
            [sys.executable, "-m", "nestos_inst", *args],
            input=data,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_sigpipe_silent_for_show_commands(image: Path) -> None:
    big = write_initrd({f"f{i:05}": b"" for i in range(5000)} | {"config.ign": CONFIG * 5000})
    for args in (
        ["dev", "show", "initrd", "-"],
        ["pxe", "ignition", "unwrap"],
    ):
        proc = _closed_pipe_run(args, big)
        assert proc.returncode == -signal.SIGPIPE, proc.stderr
        assert proc.stderr == b""


def test_epipe_error_for_wrap() -> None:
    proc = _closed_pipe_run(["pxe", "ignition", "wrap"], CONFIG)
    assert proc.returncode == 1
    assert b"Broken pipe" in proc.stderr


def test_non_ascii_names_any_locale(tmp_path: Path) -> None:
    data = write_initrd({f"{NETDIR}/café.nmconnection": b"x"})
    env = {"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    shown = ok(run_cli("dev", "show", "initrd", "-", input=data, env=env))
    assert shown == f"{NETDIR}/café.nmconnection\n".encode()
    dest = tmp_path / "d"
    printed = ok(run_cli("pxe", "network", "unwrap", "-C", dest, input=data, env=env))
    assert printed == f"{dest}/café.nmconnection\n".encode()
    printed = ok(run_cli("dev", "extract", "initrd", "-v", "-C", dest, "-", input=data, env=env))
    assert printed == f"{dest}/{NETDIR}/café.nmconnection\n".encode()
    header = ok(run_cli("pxe", "network", "unwrap", input=data, env=env))
    assert header == "########## café.nmconnection ##########\nx".encode()
