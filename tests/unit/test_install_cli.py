"""The `install` command line: flags from the options table, usage errors, dry run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.install.options import OPTIONS
from tests.helpers.cli import run_cli


def test_help_lists_every_visible_flag_within_80_columns() -> None:
    proc = run_cli("install", "--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert max(len(line) for line in text.splitlines()) <= 80
    for opt in OPTIONS:
        if opt.kind == "positional":
            assert "DEST_DEVICE" in text
        elif opt.hidden:
            assert opt.flag not in text
        else:
            assert opt.flag in text
            if opt.short:
                assert f"{opt.short}," in text or f"{opt.short} " in text
    assert "Advanced Options" in text
    assert "--config-file" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: DEST_DEVICE"),
        (("/dev/x", "-u", "https://a/b", "-f", "c"), "not allowed with argument"),
        (("/dev/x", "-s", "stable", "-f", "c"), "not allowed with argument"),
        (("/dev/x", "-i", "a", "-I", "https://a/b"), "not allowed with argument"),
        (("/dev/x", "--console", "ttyS0,115200p8"), "invalid or unsupported console argument"),
        (("/dev/x", "--console", "console=ttyS0"), 'spec should not start with "console="'),
        (("/dev/x", "--ignition-hash", "sha512-00"), "wrong digest length (8)"),
        (("/dev/x", "--fetch-retries", "abc"), "expected a number or"),
        (("/dev/x", "--fetch-retries", "99999999999"), "expected a number or"),
        (("/dev/x", "--fetch-timeout", "0"), "invalid timeout '0'"),
        (("/dev/x", "--image-url", "nope"), "relative URL without a base"),
        (("/dev/x", "--bogus"), "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = run_cli("install", *args)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "error:" in err
    assert message in err


def test_hidden_flags_are_accepted(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(4096))
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    proc = run_cli(
        "install", target, "--ignition", _ign(tmp_path), "-f", img, "--insecure",
        "--firstboot-args", "ip=dhcp", "--osmet-dir", tmp_path, "--ostree-repo", tmp_path,
        "--dry-run",
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "append first-boot kernel arguments: ip=dhcp" in out


def _ign(tmp_path: Path) -> Path:
    path = tmp_path / "c.ign"
    path.write_text("{}")
    return path


def test_dry_run_on_file_writes_nothing(tmp_path: Path) -> None:
    img = tmp_path / "img.raw.xz"
    img.write_bytes(b"\xfd7zXZ\x00")
    target = tmp_path / "vm.img"
    target.write_bytes(b"\x01" * 8192)
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    proc = run_cli(
        "install", target, "-f", img, "--insecure", "--platform", "qemu",
        "--console", "ttyS0", "--save-partlabel", "data", "--dry-run",
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Dry run: nothing will be written." in out
    assert f"Source: Copying image from {img}" in out
    assert "Signature: not found; not verified (--insecure)" in out
    assert f"Destination: {target} (disk image file" in out
    assert "Partitions kept: none" in out
    assert "set platform to qemu" in out
    assert "configure consoles: ttyS0,9600n8" in out
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before


def test_config_files_merge_and_running_line(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(4096))
    target = tmp_path / "vm.img"
    target.write_bytes(b"")
    a = tmp_path / "a.yaml"
    a.write_text(f"image-file: {img}\nappend-karg: [c, d]\nfetch-retries: 2\ninsecure: true\n")
    b = tmp_path / "b.yaml"
    b.write_text(f"append-karg: [a, b]\nfetch-retries: 1\ndest-device: {target}\n")
    proc = run_cli(
        "install", "-c", a, "--config-file", b, "--append-karg", "e", "--append-karg", "f",
        "--fetch-retries", "3", "--console", "ttyS1", "--dry-run",
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    first = out.splitlines()[0]
    assert first == (
        f"Running with arguments: --image-file {img} --console ttyS1,9600n8 "
        "--append-karg c --append-karg d --append-karg a --append-karg b --append-karg e "
        f"--append-karg f --insecure --fetch-retries 3 --dry-run {target}"
    )


def test_two_destinations_from_file_and_cli(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("dest-device: /dev/a\n")
    proc = run_cli("install", "-c", a, "/dev/b")
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "reprocessing command-line arguments" in err


def test_not_a_block_device() -> None:
    proc = run_cli("install", "/dev/null", "-f", "/nonexistent", "--insecure")
    assert proc.returncode == 1
    assert 'Error: "/dev/null" is not a block device' in proc.stderr.decode()


def test_missing_ignition_file(tmp_path: Path) -> None:
    proc = run_cli("install", tmp_path / "t", "-i", tmp_path / "none.ign")
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert f"opening source Ignition config {tmp_path / 'none.ign'}" in err
    assert "No such file or directory (os error 2)" in err


def test_ignition_not_json(tmp_path: Path) -> None:
    ign = tmp_path / "bad.ign"
    ign.write_text("{nope")
    proc = run_cli("install", tmp_path / "t", "-i", ign)
    assert proc.returncode == 1
    assert "parsing specified Ignition config" in proc.stderr.decode()


def test_bad_partition_filter(tmp_path: Path) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    proc = run_cli("install", target, "--save-partindex", "9-7", "-f", "x", "--insecure")
    assert proc.returncode == 1
    assert "start of partition index range '9-7' cannot be greater than end" in (
        proc.stderr.decode()
    )


def test_copy_network_missing_dir(tmp_path: Path) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    proc = run_cli(
        "install", target, "-n", "--network-dir", tmp_path / "nm", "-f", "x", "--insecure"
    )
    assert proc.returncode == 1
    assert f"reading directory {tmp_path / 'nm'}" in proc.stderr.decode()
    assert target.read_bytes() == b""


@pytest.fixture
def request_cleanup() -> Iterator[list[Path]]:
    import shutil

    dirs: list[Path] = []
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_non_root_image_file_with_boot_edits_fails_before_writing(
    request_cleanup: list[Path],
) -> None:
    """Really run as `nobody` (setpriv): no loop device, no mount, so refuse up front."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.helpers.cli import REPO

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to switch to an unprivileged user (setpriv)")
    import tempfile

    # pytest's own temp tree is private to root: use a world-traversable directory.
    work = Path(tempfile.mkdtemp(prefix="nestos-nonroot-"))
    request_cleanup.append(work)
    work.chmod(0o777)
    img = work / "img.raw"
    img.write_bytes(b"\x42" * (2 << 20))
    img.chmod(0o644)
    target = work / "disk.img"
    target.write_bytes(b"")
    target.chmod(0o666)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "HOME": str(work)}
    env["LC_ALL"] = "C"
    for extra in ((), ("--dry-run",)):
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "nestos_inst", "install", str(target), "-f", str(img),
             "--insecure", "--platform", "qemu", *extra],
            capture_output=True, env=env, check=False, timeout=120,
        )  # fmt: skip
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert err.startswith(f"Error: editing /boot of {target} needs root (set platform"), err
        assert "Run as root, or leave out the options that edit /boot" in err
        assert target.read_bytes() == b""
    # Without /boot edits, an unprivileged user can build the image file.
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "nestos_inst", "install", str(target), "-f", str(img),
         "--insecure"],
        capture_output=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert target.read_bytes() == img.read_bytes()
