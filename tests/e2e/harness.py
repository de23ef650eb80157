"""Helpers the VM scenarios share: live Ignition configs, the CLI, disk checks.

See docs/e2e-harness.md for the whole API (media, boot, mirror, report).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.mirror import Nginx
from tests.e2e.vm import GUEST_SERVER, REPO, Kernel, kernel
from tests.helpers.gpgkey import SigningKey
from tests.helpers.metalimage import MetalImage, MetalImageFactory, Recipe

MiB = 1 << 20
URL = f"http://{GUEST_SERVER}"  # the mirror, as the guest sees it
# Host tools every live-media module uses (`make e2e-deps` installs them).
LIVE_TOOLS = (
    "qemu-system-x86_64", "dracut", "nginx", "xorriso", "busybox", "debugfs", "zstd",
    "mkfs.ext4",
)  # fmt: skip


def need(*tools: str) -> None:
    """Skip (visibly, naming them) when host tools a module needs are missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {' '.join(missing)} (make e2e-deps)")


@dataclass
class MirrorEnv:
    """What a module of live-media scenarios shares: the kernel, its scratch directory,
    the signed metal image, and the mirror (nginx on 127.0.0.1) serving `web_root`.
    Modules subclass it with their own fields."""

    k: Kernel
    tmp: Path
    web_root: Path
    web: Nginx
    metal: MetalImage  # gzip, 512-byte sectors, signed

    def workdir(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def publish(self, rel: str, data: Path | bytes | str) -> str:
        """Put a file on the mirror; returns its URL as the guest sees it."""
        copy_tree({rel: data}, self.web_root)
        return f"{URL}/{rel}"


def mirror_inputs(
    tmp_path_factory: pytest.TempPathFactory, name: str, key: SigningKey
) -> tuple[Kernel, Path, MetalImage]:
    """The start of a live-media module's `env` fixture: skip without LIVE_TOOLS, the
    cached kernel, a scratch directory `name`, and its `www/` (the future mirror root)
    holding the gzip metal image signed by `key` as metal.raw.gz + metal.raw.gz.sig."""
    need(*LIVE_TOOLS)
    k = kernel()
    tmp = tmp_path_factory.mktemp(name)
    metal = MetalImageFactory(tmp_path_factory.mktemp("metal"), key).get(Recipe(), "gzip")
    assert metal.sig is not None
    web_root = tmp / "www"
    web_root.mkdir()
    copy_tree({"metal.raw.gz": metal.path, "metal.raw.gz.sig": metal.sig}, web_root)
    return k, tmp, metal


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run this checkout's nestos-installer as a user would; fail loudly on rc != 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "nestos_inst", *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"nestos-installer {args} failed:\n{proc.stderr}"
    return proc


def ign_file(path: str, data: bytes | str, mode: int = 0o644) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    src = "data:;base64," + base64.b64encode(raw).decode()
    return {"path": path, "mode": mode, "overwrite": True, "contents": {"source": src}}


def ign_unit(name: str, contents: str, *, enabled: bool = True) -> dict[str, Any]:
    return {"name": name, "enabled": enabled, "contents": contents}


def ignition(
    files: list[dict[str, Any]] | None = None, units: list[dict[str, Any]] | None = None
) -> str:
    """An Ignition 3.3.0 config (the newest spec Debian 12's ignition accepts)."""
    cfg: dict[str, Any] = {"ignition": {"version": "3.3.0"}}
    if files:
        cfg["storage"] = {"files": files}
    if units:
        cfg["systemd"] = {"units": units}
    return json.dumps(cfg)


def installer_files(yaml: str, key: Path | None, name: str = "0001-e2e.yaml") -> list[Any]:
    """Live Ignition files: an installer.d config (and the key it names as keyring)."""
    files = [ign_file(f"/etc/nestos/installer.d/{name}", yaml)]
    if key is not None:
        files.append(ign_file("/etc/nestos-e2e/key.asc", key.read_bytes()))
    return files


# A post-install hook (docs/service-mode.md) the tests add through the live Ignition
# config: prints what the journal and `systemctl status` hold to the serial console.
JOURNAL_DUMP = """[Unit]
Description=e2e: journal and status of the install to the console
After=nestos-installer.service
Before=nestos-installer.target

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh /etc/nestos-e2e/dump.sh

[Install]
RequiredBy=nestos-installer.target
"""
# Pulled in by the emergency target after a failed install, same dump; before the
# emergency shell, which powers the VM off with rd.emergency=poweroff.
FAILURE_DUMP = """[Unit]
Description=e2e: journal of the failed install to the console
DefaultDependencies=no
Before=emergency.service

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh /etc/nestos-e2e/dump.sh

[Install]
WantedBy=emergency.target
"""
# While the installer runs: the first `systemctl status` that shows a STATUS= line.
STATUS_SAMPLER = """[Unit]
Description=e2e: sample systemctl status of the installer
DefaultDependencies=no
After=nestos-e2e-network.service

[Service]
Type=simple
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh /etc/nestos-e2e/sample.sh

[Install]
WantedBy=nestos-installer.service
"""
# Only the `Status: "…"` line counts: the journal lines `systemctl status` appends may
# hold a % of their own (e.g. "Read disk … (36%)") while the STATUS= text has none.
SAMPLE_SH = """nl='
'
n=0
while [ $n -lt 1200 ]; do
    out=$(systemctl status --no-pager nestos-installer.service 2>&1)
    case $out in
        *'Status: "'*)
            line=${out#*'Status: "'}
            line=${line%%"$nl"*}
            case $line in
                *%*) printf 'E2E-STATUS-BEGIN\\n%s\\nE2E-STATUS-END\\n' "$out"; exit 0 ;;
            esac ;;
    esac
    sleep 0.5
    n=$((n + 1))
done
"""
# The installer's records, whole, one JSON object a line; the host keeps the fields
# the tests read (`journal_records`). Plain sh: a second Python start in a TCG guest
# costs 10-20 s.
DUMP_SH = """journalctl -o json --no-pager SYSLOG_IDENTIFIER=nestos-installer \\
    | sed 's/^/E2E-JOURNAL /'
echo E2E-JOURNAL-END
"""
JOURNAL_KEYS = ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT")
FIELD_PREFIX = "NESTOS_INSTALLER_"


def journal_instrumentation(*, status: bool = False, failure: bool = False) -> dict[str, Any]:
    """Files + units that print the installer's journal records (and, with `status`,
    a `systemctl status` taken mid-install) as `E2E-…` lines on the console."""
    files = [ign_file("/etc/nestos-e2e/dump.sh", DUMP_SH)]
    units = [ign_unit("e2e-journal-dump.service", JOURNAL_DUMP)]
    if failure:
        units.append(ign_unit("e2e-failure-dump.service", FAILURE_DUMP))
    if status:
        files.append(ign_file("/etc/nestos-e2e/sample.sh", SAMPLE_SH))
        units.append(ign_unit("e2e-status-sample.service", STATUS_SAMPLER))
    return {"files": files, "units": units}


def journal_records(log: str) -> list[dict[str, Any]]:
    """The installer's structured journal records printed by the dump unit: only
    records with our fields, only our fields and MESSAGE/PRIORITY/identifier/unit."""
    out = []
    for line in log.splitlines():
        idx = line.find("E2E-JOURNAL {")
        if idx < 0:
            continue
        try:
            rec = json.loads(line[idx + len("E2E-JOURNAL ") :])
        except ValueError:
            continue
        if not isinstance(rec, dict) or not any(k.startswith(FIELD_PREFIX) for k in rec):
            continue
        out.append(
            {k: v for k, v in rec.items() if k.startswith(FIELD_PREFIX) or k in JOURNAL_KEYS}
        )
    return out


def blank_disk(path: Path, size: int = 160 * MiB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def partitions(disk: Path) -> dict[str, Any]:
    proc = subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, check=False)
    if proc.returncode != 0:
        return {}
    table: dict[str, Any] = json.loads(proc.stdout)["partitiontable"]
    return table


def boot_file(disk: Path, path: str, workdir: Path) -> str:
    """A file of the installed disk's `boot` ext4 partition, read with debugfs."""
    table = partitions(disk)
    part = next(p for p in table["partitions"] if p.get("name") == "boot")
    sector = int(table.get("sectorsize", 512))
    fs = workdir / "boot.ext4"
    with disk.open("rb") as src, fs.open("wb") as dst:
        src.seek(int(part["start"]) * sector)
        dst.write(src.read(int(part["size"]) * sector))
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(fs)], capture_output=True, check=False
    )
    fs.unlink()
    return proc.stdout.decode()


def disk_matches_image(disk: Path, raw: Path, *, skip_boot: bool = True) -> bool:
    """Every partition but `boot` (which the installer edits) equals the image's."""
    table = partitions(disk)
    sector = int(table.get("sectorsize", 512))
    with disk.open("rb") as d, raw.open("rb") as r:
        for p in table.get("partitions", []):
            if skip_boot and p.get("name") == "boot":
                continue
            start, size = int(p["start"]) * sector, int(p["size"]) * sector
            d.seek(start)
            r.seek(start)
            left = size
            while left:
                n = min(left, MiB)
                if d.read(n) != r.read(n):
                    return False
                left -= n
    return True


def copy_tree(files: dict[str, Path | bytes | str], root: Path) -> Path:
    """Lay out a mirror directory: relative path -> file to copy or contents."""
    for rel, src in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copyfile(src, dest)
        else:
            dest.write_bytes(src.encode() if isinstance(src, str) else src)
        dest.chmod(0o644)
    root.chmod(0o755)
    return root
