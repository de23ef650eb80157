"""Structured journal records and sd_notify STATUS= from a real service-mode install.

No journald runs here, so the test binds a datagram socket of its own and a
NOTIFY_SOCKET, runs `nestos-installer service run` as a subprocess against a fake
command line and installer.d, and decodes what arrived. The subprocess runs in a
private mount namespace whose /run is a fresh tmpfs with the test's socket at
/run/systemd/journal/socket, where libsystemd (and our fallback) send: the real path
for the code under test, and nothing in the machine's /run that a second test run (or
a real journald) could collide with.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestos_inst.service import journal as journal_mod
from nestos_inst.service.journal import JournalReporter, _encode
from tests.helpers.cli import REPO, run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.metalimage import MetalImageFactory, Recipe

P = "NESTOS_INSTALLER_"
# Runs "$@" with the directory "$0" as /run/systemd/journal, /run being a private tmpfs.
_PRIVATE_RUN = (
    "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/systemd/journal && "
    'mount --bind "$0" /run/systemd/journal && exec "$@"'
)


def decode(datagram: bytes) -> dict[str, str]:
    """The native journal protocol: KEY=value lines, or KEY\\n<le64 size><data>\\n."""
    out: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
            i = nl + 1
        else:
            size = int.from_bytes(datagram[nl + 1 : nl + 9], "little")
            out[line.decode()] = datagram[nl + 9 : nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return out


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(1 << 20))
    return out


@contextlib.contextmanager
def bound(path: Path) -> Iterator[socket.socket]:
    """A datagram socket at `path`; removes it (and a directory it made) afterwards."""
    made: list[Path] = []
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        sock.bind(str(path))
        yield sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()


@dataclass
class FakeJournald:
    """The test's stand-in for journald's socket, and how to run a command that sees
    it at /run/systemd/journal/socket."""

    sock: socket.socket
    path: Path
    wrapper: list[str]


@pytest.fixture
def fake_journald(tmp_path: Path) -> Iterator[FakeJournald]:
    if os.geteuid() != 0:
        pytest.skip("needs root (a private mount namespace)")
    jdir = tmp_path / "journal"
    jdir.mkdir()
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_RUN]
    with bound(jdir / "socket") as sock:
        yield FakeJournald(sock, jdir / "socket", [*wrapper, str(jdir)])


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    with bound(path) as sock:
        yield sock, str(path)


# ---- unit level: the reporter itself ----------------------------------------------


_REPORTER = """
from nestos_inst.progress import ProgressEvent
from nestos_inst.service.journal import JournalReporter
rep = JournalReporter(device="/dev/vda", image="/srv/metal.raw.gz")
rep(ProgressEvent("write", "disk", 512 << 20, 1 << 30, False))
rep.stage("complete", "Install complete.")
"""


def test_reporter_fields(fake_journald: FakeJournald, notify: tuple[socket.socket, str]) -> None:
    """The reporter as the service runs it (systemd-python when installed)."""
    proc = subprocess.run(
        [*fake_journald.wrapper, sys.executable, "-c", _REPORTER],
        env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": notify[1]},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    records = [decode(d) for d in drain(fake_journald.sock)]
    assert records[0]["MESSAGE"] == "Read disk 512.0 MiB/1.0 GiB (50%)"
    assert records[0][P + "STAGE"] == "write"
    assert records[0][P + "BYTES_DONE"] == str(512 << 20)
    assert records[0][P + "BYTES_TOTAL"] == str(1 << 30)
    assert records[0][P + "PERCENT"] == "50"
    assert records[0][P + "DEVICE"] == "/dev/vda"
    assert records[0][P + "IMAGE"] == "/srv/metal.raw.gz"
    assert records[0]["SYSLOG_IDENTIFIER"] == "nestos-installer"
    assert records[1][P + "STAGE"] == "complete"
    assert P + "PERCENT" not in records[1]
    states = [d.decode() for d in drain(notify[0])]
    assert states == [
        "STATUS=write 50%: Read disk 512.0 MiB/1.0 GiB (50%)",
        "STATUS=Install complete.",
    ]


def test_fallback_encoder_matches_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without systemd-python the same datagrams are written by hand."""
    monkeypatch.setattr(
        journal_mod, "_backends", lambda: (journal_mod._fallback_send, journal_mod._fallback_notify)
    )
    with bound(tmp_path / "socket") as sock:
        monkeypatch.setattr(journal_mod, "JOURNAL_SOCKET", str(tmp_path / "socket"))
        _fallback_record(sock)


def _fallback_record(fake_journald: socket.socket) -> None:
    rep = JournalReporter(device="/dev/sda")
    rep.stage("failed", "Install failed: Error: x\n\nCaused by:\n    y", priority=3)
    (rec,) = [decode(d) for d in drain(fake_journald)]
    assert rec["MESSAGE"] == "Install failed: Error: x\n\nCaused by:\n    y"
    assert rec["PRIORITY"] == "3"
    assert rec[P + "DEVICE"] == "/dev/sda"
    assert decode(_encode({"A": "1", "B": "x\ny"})) == {"A": "1", "B": "x\ny"}


def test_no_journald_is_silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "JOURNAL_SOCKET", str(tmp_path / "none"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "none2"))
    journal_mod._fallback_send({"MESSAGE": "x"})
    journal_mod._fallback_notify("STATUS=x")


# ---- a real install through `service run` -----------------------------------------


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> MetalImageFactory:
    return MetalImageFactory(tmp_path_factory.mktemp("metal"), signing_key)


def setup_service(
    tmp_path: Path, factory: MetalImageFactory, key: SigningKey, *, corrupt: bool = False
) -> tuple[Path, Path, Path, Path]:
    img = factory.get(Recipe(), "gzip")
    image = tmp_path / "metal.raw.gz"
    shutil.copyfile(img.path, image)
    assert img.sig is not None
    shutil.copyfile(img.sig, tmp_path / "metal.raw.gz.sig")
    if corrupt:
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 0xFF
        image.write_bytes(bytes(data))
    ign = tmp_path / "config.ign"
    ign.write_text('{"ignition": {"version": "3.3.0"}}')
    conf = tmp_path / "installer.d"
    conf.mkdir()
    (conf / "0000-test.yaml").write_text(
        f"image-file: {image}\nignition-file: {ign}\nkeyring: [{key.public}]\n"
        "append-karg: [nestos.test=1]\n"
    )
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    os.truncate(disk, 64 << 20)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"quiet nestos.inst.install_dev={disk} nestos.inst.platform_id=qemu ip=dhcp\n"
    )
    return conf, disk, cmdline, image


@pytest.mark.root
def test_service_install_journal_fields(
    tmp_path: Path,
    factory: MetalImageFactory,
    signing_key: SigningKey,
    fake_journald: FakeJournald,
    notify: tuple[socket.socket, str],
) -> None:
    conf, disk, cmdline, image = setup_service(tmp_path, factory, signing_key)
    proc = run_cli(
        "service", "run", "--cmdline-file", cmdline, "--config-dir", conf,
        env={"NOTIFY_SOCKET": notify[1]}, wrapper=fake_journald.wrapper,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Install complete." in err
    out = proc.stdout.decode()
    assert f"nestos-installer install (from {conf}/0000-test.yaml, kernel command line)" in out
    assert f"Running with arguments: --image-file {image} " in out
    assert "--platform qemu" in out and "--fetch-retries infinite" in out
    records = [decode(d) for d in drain(fake_journald.sock)]
    stages = [r[P + "STAGE"] for r in records]
    assert stages[0] == "start" and stages[-1] == "complete"
    progress = [r for r in records if P + "BYTES_DONE" in r]
    assert progress, records
    last = progress[-1]
    assert last[P + "PERCENT"] == "100"
    assert last[P + "BYTES_DONE"] == last[P + "BYTES_TOTAL"]
    assert int(last[P + "BYTES_TOTAL"]) == image.stat().st_size
    assert last["MESSAGE"].startswith("Read disk ")
    for r in records:
        assert r[P + "DEVICE"] == str(disk)
        assert r[P + "IMAGE"] == str(image)
        assert r["SYSLOG_IDENTIFIER"] == "nestos-installer"
    states = [d.decode() for d in drain(notify[0])]
    assert states[-1] == "STATUS=Install complete."
    assert any(s.startswith("STATUS=write 100%: Read disk") for s in states)
    assert not conf.exists()  # installer.d removed: no install loop
    assert disk.read_bytes()[512:520] == b"EFI PART"


@pytest.mark.root
def test_service_failure_is_logged_and_keeps_config(
    tmp_path: Path,
    factory: MetalImageFactory,
    signing_key: SigningKey,
    fake_journald: FakeJournald,
) -> None:
    conf, disk, cmdline, _ = setup_service(tmp_path, factory, signing_key, corrupt=True)
    before = (conf / "0000-test.yaml").read_bytes()
    proc = run_cli(
        "service", "run", "--cmdline-file", cmdline, "--config-dir", conf,
        wrapper=fake_journald.wrapper,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Error: install failed" in err
    records = [decode(d) for d in drain(fake_journald.sock)]
    failed = [r for r in records if r[P + "STAGE"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["PRIORITY"] == "3"
    assert failed[0]["MESSAGE"].startswith("Install failed: Error: install failed")
    # The record names why (read on its own in `journalctl`), not only "install failed".
    assert failed[0]["MESSAGE"].count("Error: ") >= 2, failed[0]["MESSAGE"]
    assert (conf / "0000-test.yaml").read_bytes() == before
    # The write phase failed: the disk carries a fresh, empty partition table.
    proc = subprocess.run(["sfdisk", "-J", disk], capture_output=True, check=True)
    table = json.loads(proc.stdout)
    assert table["partitiontable"]["label"] == "gpt"
    assert table["partitiontable"].get("partitions", []) == []


def test_bad_karg_is_logged_before_anything_is_touched(
    tmp_path: Path, fake_journald: FakeJournald
) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("nestos.inst.install_dev=/dev/vda nestos.inst.image_url=foo\n")
    conf = tmp_path / "installer.d"
    conf.mkdir()
    (conf / "a.yaml").write_text("platform: qemu\n")
    proc = run_cli(
        "service", "run", "--cmdline-file", cmdline, "--config-dir", conf,
        wrapper=fake_journald.wrapper,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.startswith('Error: parsing kernel argument "nestos.inst.image_url=foo"')
    (rec,) = [decode(d) for d in drain(fake_journald.sock)]
    assert rec[P + "STAGE"] == "failed"
    assert 'kernel argument "nestos.inst.image_url=foo"' in rec["MESSAGE"]
    assert P + "DEVICE" not in rec
    assert (conf / "a.yaml").read_text() == "platform: qemu\n"
