"""QEMU/TCG harness for service-mode end-to-end tests.

Builds (and caches) an initramfs from an unpacked Debian kernel package plus our dracut
module installed from a `make install DESTDIR=` staging tree, appends a cpio of test
files, boots it with `-nic none -no-reboot` under `timeout`, and returns the serial log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("NESTOS_E2E_CACHE", "/var/tmp/nestos-e2e-cache"))
KERNEL_META = "linux-image-amd64"
DRIVERS = "virtio_pci virtio_blk ext4 crc32c_generic"
DRACUT_MODULES = (
    "base systemd systemd-initrd systemd-modules-load dracut-systemd udev-rules nestos-installer"
)


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    version: str
    moddir: Path


def _run(
    argv: list[str], *, cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, capture_output=True, cwd=cwd, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}"
            f"{proc.stdout.decode(errors='replace')[-3000:]}"
        )
    return proc


def kernel() -> Kernel:
    """The Debian kernel package, downloaded and unpacked once (never installed)."""
    kdir = CACHE / "kernel"
    found = sorted((kdir / "boot").glob("vmlinuz-*")) if kdir.is_dir() else []
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        dep = _run(["apt-cache", "depends", KERNEL_META]).stdout.decode()
        pkg = next(
            line.split(":", 1)[1].strip()
            for line in dep.splitlines()
            if line.strip().startswith("Depends:") and "linux-image-" in line
        )
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            _run(["apt-get", "download", pkg], cwd=tmp)
            deb = next(Path(tmp).glob("*.deb"))
            part = CACHE / "kernel.part"
            shutil.rmtree(part, ignore_errors=True)
            _run(["dpkg-deb", "-x", str(deb), str(part)])
            kver = next((part / "boot").glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
            _run(["depmod", "-b", str(part), kver])
            part.rename(kdir)
        found = sorted((kdir / "boot").glob("vmlinuz-*"))
    vmlinuz = found[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(vmlinuz, version, kdir / "lib" / "modules")


def _tree_digest(*roots: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def initramfs(k: Kernel) -> Path:
    """dracut initramfs with our module, rebuilt when the product's files change."""
    key = _tree_digest(
        REPO / "nestos_inst", REPO / "units", REPO / "dracut", REPO / "Makefile",
        extra=f"{DRACUT_MODULES}|{DRIVERS}",
    )  # fmt: skip
    out = CACHE / f"initramfs-{k.version}-{key}.img"
    if out.exists():
        return out
    for old in CACHE.glob("initramfs-*.img"):
        old.unlink()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        stage = Path(tmp) / "stage"
        _run(["make", "-s", "install", f"DESTDIR={stage}", "PREFIX=/usr"], cwd=REPO)
        base = Path(tmp) / "dracut"
        shutil.copytree("/usr/lib/dracut", base, symlinks=True)
        shutil.copytree(
            stage / "usr/lib/dracut/modules.d/50nestos-installer",
            base / "modules.d/50nestos-installer",
        )
        env = dict(os.environ)
        env.update(
            dracutbasedir=str(base),
            NESTOS_INSTALLER_PYTHON=sys.executable,
            NESTOS_INSTALLER_SRCROOT=str(stage),
            PYTHONPATH=str(stage / "usr/lib/python3/dist-packages"),
        )
        part = Path(tmp) / "initramfs.img"
        proc = _run(
            [
                "dracut",
                "--force",
                "--verbose",
                "--no-hostonly",
                "--no-early-microcode",
                "--no-compress",
                "--kver",
                k.version,
                "--kmoddir",
                str(k.moddir / k.version),
                "-m",
                DRACUT_MODULES,
                "--add-drivers",
                DRIVERS,
                "--tmpdir",
                tmp,
                str(part),
            ],
            env=env,
        )
        (CACHE / "dracut.log").write_bytes(proc.stderr)
        part.rename(out)
    return out


def cpio_of(root: Path, out: Path) -> Path:
    """A newc archive of `root` (paths relative to it), for appending to an initramfs."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    data = "\n".join(names).encode() + b"\n"
    with out.open("wb") as f:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
            input=data,
            stdout=f,
            cwd=root,
            check=True,
        )
    return out


@dataclass
class Boot:
    log: str
    returncode: int
    timed_out: bool


def boot(
    k: Kernel,
    initrd_parts: list[Path],
    disk: Path,
    cmdline: str,
    *,
    workdir: Path,
    timeout: float = 150,
    stop_on: str | None = None,
) -> Boot:
    """Boot under TCG; returns the serial log. Stops early when `stop_on` is logged.

    `no_timer_check`: on a loaded host the emulated IO-APIC timer check can fail and
    panic the guest before init; virtualized guests skip it routinely.
    """
    initrd = workdir / "initrd.img"
    with initrd.open("wb") as out:
        for part in initrd_parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    log_path = workdir / "console.log"
    argv = [
        "timeout",
        "--kill-after=5",
        str(int(timeout)),
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        # `max` has RDRAND: the guest's RNG is ready at once instead of after a minute.
        "-cpu",
        "max",
        # One vCPU each: the VMs run side by side on a small host, and TCG threads
        # beyond the host's cores only slow every guest down (measured: 85 s vs 125 s).
        "-smp",
        "1",
        "-m",
        "2048",
        "-nic",
        "none",
        "-no-reboot",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        f"file:{log_path}",
        "-kernel",
        str(k.vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        f"console=ttyS0 panic=-1 no_timer_check {cmdline}",
        "-drive",
        f"file={disk},format=raw,if=virtio",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    timed_out = False
    try:
        if stop_on is None:
            proc.wait()
        else:
            import time

            while proc.poll() is None:
                time.sleep(1)
                if log_path.exists() and stop_on in log_path.read_text(errors="replace"):
                    proc.terminate()
                    proc.wait(timeout=30)
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 124:
        timed_out = True
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    return Boot(log, proc.returncode, timed_out)
