"""QEMU/TCG harness for service-mode end-to-end tests.

Builds (and caches) an initramfs from an unpacked Debian kernel package plus our dracut
module installed from a `make install DESTDIR=` staging tree, appends a cpio of test
files, boots it with `-nic none -no-reboot` under `timeout`, and returns the serial log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("NESTOS_E2E_CACHE", "/var/tmp/nestos-e2e-cache"))
KERNEL_META = "linux-image-amd64"
HARNESS_DRACUT = REPO / "tests" / "e2e" / "dracut"
# One dracut image serves as the install initramfs (test_service_vm: it installs from
# inside the initramfs) and, unpacked, as the live root of the live media (live.py).
DRIVERS = "virtio_pci virtio_blk virtio_net ext4 crc32c_generic"
DRACUT_MODULES = (
    "base systemd systemd-initrd systemd-modules-load systemd-journald dracut-systemd "
    "udev-rules nestos-installer nestos-e2e-root"
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


def prune(pattern: str, keep: int = 3) -> None:
    """Drop all but the `keep` newest cache entries matching `pattern`. Several
    checkouts (worktrees, CI) share the cache, each with its own keys: never delete
    the entry another run may be using right now, only old generations."""
    entries = sorted(CACHE.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)


def _tree_digest(*roots: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _staged_install(tmp: Path) -> Path:
    """`make install DESTDIR=` of this checkout: what a package would put on a system."""
    stage = tmp / "stage"
    _run(["make", "-s", "install", f"DESTDIR={stage}", "PREFIX=/usr"], cwd=REPO)
    return stage


def dracut_image(
    k: Kernel,
    name: str,
    modules: str,
    drivers: str,
    *,
    extra_moddirs: tuple[Path, ...] = (),
    with_installer: bool = True,
    compress: str = "--no-compress",
) -> Path:
    """A dracut image built into the cache, rebuilt when its inputs change.

    `extra_moddirs` are dracut module directories (tests/e2e/dracut/*) added next to
    Debian's; `with_installer` installs this checkout (`make install DESTDIR=`) and adds
    its 50nestos-installer module. Never touches the host's /boot or /usr/lib/dracut.
    """
    roots = list(extra_moddirs)
    if with_installer:
        roots += [REPO / "nestos_inst", REPO / "units", REPO / "dracut", REPO / "Makefile"]
    key = _tree_digest(*roots, extra=f"{name}|{modules}|{drivers}|{compress}|{k.version}")
    out = CACHE / f"{name}-{k.version}-{key}.img"
    if out.exists():
        return out
    prune(f"{name}-*.img")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        base = Path(tmp) / "dracut"
        shutil.copytree("/usr/lib/dracut", base, symlinks=True)
        env = dict(os.environ)
        env["dracutbasedir"] = str(base)
        if with_installer:
            stage = _staged_install(Path(tmp))
            shutil.copytree(
                stage / "usr/lib/dracut/modules.d/50nestos-installer",
                base / "modules.d/50nestos-installer",
            )
            env.update(
                NESTOS_INSTALLER_PYTHON=sys.executable,
                NESTOS_INSTALLER_SRCROOT=str(stage),
                PYTHONPATH=str(stage / "usr/lib/python3/dist-packages"),
            )
        for moddir in extra_moddirs:
            shutil.copytree(moddir, base / "modules.d" / moddir.name)
        part = Path(tmp) / "image.img"
        proc = _run(
            [
                "dracut", "--force", "--verbose", "--no-hostonly", "--no-early-microcode",
                compress, "--kver", k.version, "--kmoddir", str(k.moddir / k.version),
                "-m", modules, "--add-drivers", drivers, "--tmpdir", tmp, str(part),
            ],
            env=env,
        )  # fmt: skip
        (CACHE / f"dracut-{name}.log").write_bytes(proc.stderr)
        part.rename(out)
    return out


def initramfs(k: Kernel) -> Path:
    """dracut install initramfs with our module, rebuilt when the product's files change."""
    return dracut_image(
        k,
        "installer",
        DRACUT_MODULES,
        DRIVERS,
        extra_moddirs=(HARNESS_DRACUT / "90nestos-e2e-root",),
    )


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


# QEMU process groups started by run_qemu and not yet ended (for `stop_all`).
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
_ABORT = threading.Event()  # set by stop_all: run_qemu boots nothing more
STOP_GRACE = 10.0  # seconds QEMU gets to exit on SIGTERM before SIGKILL


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is gone already


def stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """End a `run_qemu` process group: SIGTERM (QEMU exits cleanly, `timeout` passes
    it on too), up to `grace` seconds, then SIGKILL to whatever is left of the group
    (a QEMU that did not exit, guestfwd relays); reaps `timeout`.

    Safe to call twice and after a normal exit: the group id is the session leader's
    PID, which the kernel does not hand out again while any member of the group
    lives, so the signals reach only this run's processes.
    """
    try:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_all() -> None:
    """End every QEMU still running and refuse new boots (pytest interrupted, or a
    scenario pool torn down with boots in flight): worker threads blocked in run_qemu
    return at once, with a failure, instead of after their VM timeouts."""
    _ABORT.set()
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        stop_group(proc)


def end_pool(pool: ThreadPoolExecutor, futures: Iterable[Future[Any]]) -> None:
    """Tear down a pool of parallel scenarios. Normally every future is done by then;
    after an early stop (`pytest -x`, Ctrl-C, an error in the fixture) the pending ones
    are cancelled and the running ones' VMs stopped, so teardown does not wait for
    VMs whose result nobody reads."""
    pool.shutdown(wait=False, cancel_futures=True)
    if all(f.done() for f in futures):
        pool.shutdown(wait=True)
        return
    stop_all()
    pool.shutdown(wait=True)
    _ABORT.clear()  # the next module boots normally


@dataclass
class Boot:
    log: str
    returncode: int
    timed_out: bool
    seconds: float = 0.0
    # Host clock (seconds since QEMU started) at which each `marks` string first
    # appeared on the serial console.
    marks: dict[str, float] = field(default_factory=dict)


GUEST_SERVER = "10.0.2.100"  # exists only inside QEMU's user network


def user_net(
    port: int, *, tftp: Path | None = None, bootfile: str | None = None, nic: str = "n0"
) -> list[str]:
    """QEMU user networking with restrict=on: the guest can reach nothing but
    http://10.0.2.100/ (port 80), which QEMU forwards, one relay process per guest
    connection, to 127.0.0.1:`port` on the host. `tftp`/`bootfile` add QEMU's built-in
    TFTP server for PXE. No other address is ever reachable."""
    opts = [
        f"user,id={nic},restrict=on",
        f"guestfwd=tcp:{GUEST_SERVER}:80-cmd:{shutil.which('busybox') or '/bin/busybox'}"
        f" nc 127.0.0.1 {port}",
    ]
    if tftp is not None:
        opts.append(f"tftp={tftp}")
    if bootfile is not None:
        opts.append(f"bootfile={bootfile}")
    return ["-netdev", ",".join(opts), "-device", f"virtio-net-pci,netdev={nic}"]


def run_qemu(
    args: list[str],
    *,
    workdir: Path,
    timeout: float,
    stop_on: str | None = None,
    marks: tuple[str, ...] = (),
    memory: int = 1024,
    name: str = "console",
) -> Boot:
    """Run one TCG guest (`args` add media, disks, network) until it exits, `timeout`
    passes, or `stop_on` appears on its serial console; returns the console log.

    One vCPU each: VMs run side by side on a small host, and TCG threads beyond the
    host's cores only slow every guest down (measured: 85 s vs 125 s). `-cpu max` has
    RDRAND, so the guest's RNG is ready at once instead of after a minute.
    """
    log_path = workdir / f"{name}.log"
    # `setpriv --pdeathsig TERM`: should the thread that started the VM die without
    # unwinding (the process killed by SIGKILL, or by a SIGTERM it does not handle:
    # any user of run_qemu outside pytest's conftest), `timeout` gets SIGTERM and
    # ends QEMU and its relays with it, instead of letting them run out their
    # `timeout` in a session nobody signals.
    argv = [
        "setpriv", "--pdeathsig", "TERM",
        "timeout", "--kill-after=5", str(int(timeout)),
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(memory), "-no-reboot", "-nographic", "-monitor", "none",
        "-serial", f"file:{log_path}", *args,
    ]  # fmt: skip
    start = time.monotonic()
    seen: dict[str, float] = {}
    watch = tuple(marks) + ((stop_on,) if stop_on else ())
    # Its own session: `timeout` (setpriv execs it: same PID), QEMU and QEMU's
    # guestfwd relays form one process group, which `stop_group` ends as a whole
    # (killing `timeout` alone would leave QEMU running as an orphan).
    if _ABORT.is_set():
        raise RuntimeError("e2e run stopped: no more VMs are booted")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        while proc.poll() is None and not _ABORT.is_set():
            time.sleep(0.5)
            if not watch or not log_path.exists():
                continue
            text = log_path.read_text(errors="replace")
            for m in watch:
                if m not in seen and m in text:
                    seen[m] = time.monotonic() - start
            if stop_on and stop_on in seen:
                break
    finally:
        # Normal exit, `stop_on`, a failure or Ctrl-C (KeyboardInterrupt): no QEMU and
        # no relay outlives this call.
        stop_group(proc)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    for m in watch:
        if m not in seen and m in log:
            seen[m] = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if err.strip():
        log += f"\n[qemu stderr] {err.strip()}"
    return Boot(log, proc.returncode, proc.returncode == 124, time.monotonic() - start, seen)


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
    """Boot a kernel + concatenated initrds with no network; returns the serial log.

    `no_timer_check`: on a loaded host the emulated IO-APIC timer check can fail and
    panic the guest before init; virtualized guests skip it routinely.
    """
    initrd = workdir / "initrd.img"
    with initrd.open("wb") as out:
        for part in initrd_parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    args = [
        "-nic", "none",
        "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 no_timer_check {cmdline}",
        "-drive", f"file={disk},format=raw,if=virtio",
    ]  # fmt: skip
    return run_qemu(args, workdir=workdir, timeout=timeout, stop_on=stop_on, memory=2048)
