"""Field proof on live media: the ways an operator meets the installer, in QEMU (TCG).

Each test is one scenario of build/e2e-report.json. The media are the harness's live
ISO (tests/e2e/live.py) and the PXE files `iso extract pxe` takes from it, edited with
our own CLI; images, signatures, stream metadata and Ignition configs come from nginx
on 127.0.0.1, which the guests reach only through guestfwd (docs/e2e-harness.md).

The single-VM scenarios run two at a time (one per host core: a TCG guest uses one),
started together on first use; each test waits for its own and asserts. fleet-4 (four
VMs at once) starts as soon as the last single scenario is running.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nestos_inst import profile as profiles
from tests.e2e import live
from tests.e2e.harness import (
    URL,
    MirrorEnv,
    blank_disk,
    boot_file,
    cli,
    copy_tree,
    disk_matches_image,
    ign_file,
    ignition,
    installer_files,
    journal_instrumentation,
    journal_records,
    mirror_inputs,
    partitions,
)
from tests.e2e.mirror import FaultProxy, Nginx
from tests.e2e.vm import Boot, end_pool, run_qemu, user_net
from tests.helpers.gpgkey import SigningKey
from tests.helpers.metalimage import MetalImage, MetalImageFactory, Recipe

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.slow]

DEST_IGNITION = '{"ignition": {"version": "3.3.0"}, "passwd": {}}'
KEYRING = "keyring: [/etc/nestos-e2e/key.asc]\n"
# A failed install must stop the VM, not wait at an emergency shell.
FAIL_KARGS = "rd.shell=0 rd.emergency=poweroff"
VM_TIMEOUT = 1800  # TCG on a shared 2-core host (20+ min seen at load 25): generous
FLEET = 4
# Single-VM scenarios at once: one per host core by default (a TCG guest uses one).
PARALLEL = int(os.environ.get("NESTOS_E2E_PARALLEL", "2"))


@dataclass
class Env(MirrorEnv):
    """What every scenario shares: kernel, images, keys, the mirror, PXE files."""

    key: SigningKey
    other_key: SigningKey
    pxe: dict[str, list[str]] = field(default_factory=dict)  # profile -> [kernel, initrd, rootfs]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey, other_key: SigningKey
) -> Iterator[Env]:
    k, tmp, metal = mirror_inputs(tmp_path_factory, "live", signing_key)
    web_root = copy_tree({"config.ign": DEST_IGNITION}, tmp / "www")
    # PXE files: `iso extract pxe` of both ISO variants, served by the mirror.
    pxe: dict[str, list[str]] = {}
    for prof in (profiles.NESTOS, profiles.COREOS):
        iso = live.live_iso_copy(k, tmp / f"{prof.name}-live.iso", prof)
        out = web_root / "pxe" / prof.name
        cli("iso", "extract", "pxe", "-o", out, iso)
        pxe[prof.name] = [
            f"pxe/{prof.name}/{prof.name}-live-{n}" for n in ("vmlinuz", "initrd.img", "rootfs.img")
        ]
        for rel in pxe[prof.name]:
            (web_root / rel).chmod(0o644)
        iso.unlink()
    with Nginx(web_root, tmp / "nginx", ports=1 + FLEET) as web:
        yield Env(k, tmp, web_root, web, metal, signing_key, other_key, pxe)


def assert_installed(disk: Path, metal: MetalImage, workdir: Path, ign: str) -> None:
    table = partitions(disk)
    assert table.get("label") == "gpt", table
    names = [p.get("name") for p in table["partitions"]]
    assert names == [p.get("name") for p in metal.partitions]
    assert disk_matches_image(disk, metal.raw)
    assert boot_file(disk, "/ignition/config.ign", workdir) == ign


def assert_no_loop(log: str) -> None:
    """A failed install ends powered off from emergency mode, never rebooting."""
    assert "Emergency Mode" in log, log[-4000:]
    assert "Install complete." not in log
    assert "reboot: Restarting system" not in log
    assert "reboot: Power down" in log, log[-4000:]


def failed_install(b: Boot) -> dict[str, Any]:
    """A VM whose install must fail: it ended in time, powered off from emergency mode
    (no reboot loop); returns the last `failed` record of its journal."""
    assert not b.timed_out, b.log[-4000:]
    assert_no_loop(b.log)
    recs = journal_records(b.log)
    failed = [r for r in recs if r.get("NESTOS_INSTALLER_STAGE") == "failed"]
    assert failed, recs
    return failed[-1]


def pxe_boot(
    env: Env, w: Path, prof: profiles.Profile, kargs: str, extra_initrds: list[Path],
    *, disk: Path, port: int | None = None, disk_opts: str = "", name: str = "console",
) -> Boot:  # fmt: skip
    """Network boot through QEMU's TFTP + iPXE, everything fetched from the mirror."""
    files = env.pxe[prof.name]
    urls = files[1:] + [env.publish(f"{w.name}/{p.name}", p).removeprefix(f"{URL}/") for p in
                        extra_initrds]  # fmt: skip
    args = live.pxe_args(
        w / "tftp", files[0], urls, live.pxe_kargs(prof, kargs), port or env.web.port,
        disk=disk, disk_opts=disk_opts,
    )  # fmt: skip
    return run_qemu(args, workdir=w, timeout=VM_TIMEOUT, name=name, marks=("Install complete.",))


def direct_boot(
    env: Env, w: Path, prof: profiles.Profile, kargs: str, extra_initrds: list[Path],
    *, disk: Path, port: int | None = None, disk_args: list[str] | None = None,
) -> Boot:  # fmt: skip
    """The PXE files loaded by QEMU itself (no iPXE transfer), network from the mirror."""
    vmlinuz, initrd, rootfs = (env.web_root / f for f in env.pxe[prof.name])
    args = live.direct_args(
        vmlinuz, [initrd, rootfs, *extra_initrds], live.pxe_kargs(prof, kargs), w,
        None if disk_args else disk,
    )  # fmt: skip
    args += (disk_args or []) + user_net(port or env.web.port)
    return run_qemu(args, workdir=w, timeout=VM_TIMEOUT, marks=("Install complete.",))


def wrap(cfg: str, w: Path, name: str = "live-ign.img") -> Path:
    """`pxe ignition wrap`: the live Ignition config as an initrd."""
    src = w / (name + ".json")
    src.write_text(cfg)
    out = w / name
    cli("pxe", "ignition", "wrap", "-i", src, "-o", out)
    return out


# ---- scenarios ------------------------------------------------------------------------


def iso_autoinstall(env: Env) -> None:
    """`iso kargs modify` + `iso ignition embed` on the live ISO; QEMU passes nothing
    but the CD and a blank disk: the kargs reach the live kernel, the embedded config
    (the key to trust) reaches the live root, image and Ignition come from nginx."""
    w = env.workdir("iso-autoinstall")
    iso = live.live_iso_copy(env.k, w / "live.iso")
    live_ign = w / "live.ign"
    live_ign.write_text(ignition(installer_files(KEYRING, env.key.public)))
    cli("iso", "ignition", "embed", "-i", live_ign, iso)
    cli(
        "iso", "kargs", "modify",
        "-a", "nestos.inst.install_dev=/dev/vda",
        "-a", f"nestos.inst.image_url={URL}/metal.raw.gz",
        "-a", f"nestos.inst.ignition_url={URL}/config.ign",
        iso,
    )  # fmt: skip
    disk = blank_disk(w / "disk.img")
    b = run_qemu(live.cdrom_args(iso, disk) + user_net(env.web.port), workdir=w, timeout=VM_TIMEOUT)
    log = b.log
    assert not b.timed_out, log[-4000:]
    cmdline = next(line for line in log.splitlines() if "Kernel command line:" in line)
    assert f"nestos.inst.image_url={URL}/metal.raw.gz" in cmdline
    assert "live Ignition config applied" in log, log[-4000:]
    assert "Install complete." in log, log[-4000:]
    assert "reboot: Restarting system" in log
    assert_installed(disk, env.metal, w, DEST_IGNITION)


def pxe_network(env: Env) -> None:
    """iPXE over QEMU's TFTP + the mirror, CoreOS media and `coreos.inst.*` kargs; the
    Ignition config by URL with a hash (installer.d `ignition-hash`), signed image."""
    w = env.workdir("pxe-network")
    dest = '{"ignition": {"version": "3.3.0"}, "storage": {}}'
    url = env.publish("pxe-network/dest.ign", dest)
    digest = hashlib.sha256(dest.encode()).hexdigest()
    yaml = f"{KEYRING}ignition-url: {url}\nignition-hash: sha256-{digest}\n"
    files = [ign_file("/etc/coreos/installer.d/0001-e2e.yaml", yaml)]
    files.append(ign_file("/etc/nestos-e2e/key.asc", env.key.public.read_bytes()))
    ign_img = wrap(ignition(files), w)
    disk = blank_disk(w / "disk.img")
    kargs = f"coreos.inst.install_dev=/dev/vda coreos.inst.image_url={URL}/metal.raw.gz"
    b = pxe_boot(env, w, profiles.COREOS, kargs, [ign_img], disk=disk)
    log = b.log
    assert not b.timed_out, log[-4000:]
    assert "iPXE" in log
    assert "coreos.inst.install_dev=/dev/vda" in log
    assert "Install complete." in log, log[-4000:]
    assert_installed(disk, env.metal, w, dest)


def stream(env: Env) -> None:
    """Stream metadata from nginx (installer.d `stream-base-url:`): the target is a 4Kn
    disk, so the `4k.raw.xz` artifact is installed, not the 512-byte one."""
    w = env.workdir("stream")
    factory = MetalImageFactory(w, env.key)
    img512 = factory.get(Recipe(seed=3), "xz")
    img4k = factory.get(Recipe(sector_size=4096, seed=4), "xz")
    assert img512.sig and img4k.sig
    formats = {}
    for fmt, img in (("raw.xz", img512), ("4k.raw.xz", img4k)):
        loc = env.publish(f"stream/{fmt}", img.path)
        assert img.sig is not None
        sig = env.publish(f"stream/{fmt}.sig", img.sig)
        sha = hashlib.sha256(img.path.read_bytes()).hexdigest()
        formats[fmt] = {"disk": {"location": loc, "signature": sig, "sha256": sha}}
    doc = {
        "stream": "e2e",
        "metadata": {"last-modified": "2026-12-03T00:00:00Z"},
        "architectures": {
            "x86_64": {"artifacts": {"metal": {"release": "e2e.1", "formats": formats}}}
        },
    }
    env.publish("streams/e2e.json", json.dumps(doc))
    yaml = (
        f"{KEYRING}stream: e2e\nstream-base-url: {URL}/streams/\n"
        "ignition-file: /etc/nestos-e2e/dest.ign\n"
    )
    files = installer_files(yaml, env.key.public)
    files.append(ign_file("/etc/nestos-e2e/dest.ign", DEST_IGNITION))
    ign_img = wrap(ignition(files), w)
    disk = blank_disk(w / "disk.img")
    disk_args = [
        "-drive", f"file={disk},format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,drive=d0,logical_block_size=4096,physical_block_size=4096",
    ]  # fmt: skip
    b = direct_boot(env, w, profiles.NESTOS, "nestos.inst.install_dev=/dev/vda", [ign_img],
                    disk=disk, disk_args=disk_args)  # fmt: skip
    log = b.log
    assert not b.timed_out, log[-4000:]
    assert "Install complete." in log, log[-4000:]
    with disk.open("rb") as f:
        head = f.read(8192)
    assert head[4096:4104] == b"EFI PART", "not the 4Kn image"
    with img4k.raw.open("rb") as f:
        assert f.read(8192)[4096:4104] == b"EFI PART"
    assert "/stream/4k.raw.xz" in {h.path for h in env.web.hits() if h.status == 200}


def journal(env: Env) -> None:
    """`journalctl -o json` of the install carries our fields from start to complete,
    and `systemctl status nestos-installer` shows the STATUS= progress line; both are
    read inside the VM by units of the live Ignition config and printed on the console."""
    w = env.workdir("journal")
    inst = journal_instrumentation(status=True)
    files = installer_files(KEYRING, env.key.public) + inst["files"]
    ign_img = wrap(ignition(files, inst["units"]), w)
    disk = blank_disk(w / "disk.img")
    # From the slow mirror: the download takes seconds, so the sampler sees the
    # `write N%` STATUS= line however loaded the host is.
    image = f"{URL}/slow/metal.raw.gz"
    kargs = f"nestos.inst.install_dev=/dev/vda nestos.inst.image_url={image} " + (
        f"nestos.inst.ignition_url={URL}/config.ign"
    )
    b = direct_boot(env, w, profiles.NESTOS, kargs, [ign_img], disk=disk)
    log = b.log
    assert not b.timed_out, log[-4000:]
    assert "E2E-JOURNAL-END" in log, log[-4000:]
    recs = journal_records(log)
    stages = [r.get("NESTOS_INSTALLER_STAGE") for r in recs]
    assert stages[0] == "start", stages
    assert stages[-1] == "complete", stages
    progress = [r for r in recs if "NESTOS_INSTALLER_PERCENT" in r]
    assert progress, stages
    pcts = [int(r["NESTOS_INSTALLER_PERCENT"]) for r in progress]
    assert pcts == sorted(pcts) and pcts[-1] == 100, pcts
    for r in recs:
        assert r["NESTOS_INSTALLER_DEVICE"] == "/dev/vda", r
        assert r["NESTOS_INSTALLER_IMAGE"] == image, r
        assert r["SYSLOG_IDENTIFIER"] == "nestos-installer"
    assert int(progress[-1]["NESTOS_INSTALLER_BYTES_DONE"]) > 0
    status = log.split("E2E-STATUS-BEGIN", 1)[1].split("E2E-STATUS-END", 1)[0]
    assert "nestos-installer.service" in status
    line = next(x for x in status.splitlines() if "Status:" in x)
    assert "%" in line and "Read disk" in line, line
    assert "Install complete." in log
    assert_installed(disk, env.metal, w, DEST_IGNITION)


def resume(env: Env) -> None:
    """The mirror's connection drops once mid-image; the install resumes and the disk
    is correct."""
    w = env.workdir("resume")
    ign_img = wrap(ignition(installer_files(KEYRING, env.key.public)), w)
    disk = blank_disk(w / "disk.img")
    kargs = f"nestos.inst.install_dev=/dev/vda nestos.inst.image_url={URL}/metal.raw.gz"
    size = env.metal.path.stat().st_size
    with FaultProxy(env.web.port, "/metal.raw.gz", size // 2) as proxy:
        b = direct_boot(env, w, profiles.NESTOS, kargs, [ign_img], disk=disk, port=proxy.port)
    log = b.log
    assert not b.timed_out, log[-4000:]
    assert proxy.dropped == 1, proxy.requests
    image_gets = [r for r in proxy.requests if r.startswith("GET /metal.raw.gz ")]
    assert len(image_gets) >= 2, proxy.requests
    print("resume: requests", proxy.requests, "with Range:", proxy.ranged)
    assert "Install complete." in log, log[-4000:]
    table = partitions(disk)
    assert [p.get("name") for p in table["partitions"]] == [
        p.get("name") for p in env.metal.partitions
    ]
    assert disk_matches_image(disk, env.metal.raw)


def bad_signature(env: Env) -> None:
    """The image is signed by a key the live system does not trust: failure record in
    the journal, emergency target, partition table wiped, powered off (no loop)."""
    w = env.workdir("bad-signature")
    inst = journal_instrumentation(failure=True)
    files = installer_files(KEYRING, env.other_key.public) + inst["files"]
    ign_img = wrap(ignition(files, inst["units"]), w)
    disk = blank_disk(w / "disk.img")
    with env.metal.raw.open("rb") as src, disk.open("r+b") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    kargs = (
        f"nestos.inst.install_dev=/dev/vda nestos.inst.image_url={URL}/metal.raw.gz {FAIL_KARGS}"
    )
    failed = failed_install(direct_boot(env, w, profiles.NESTOS, kargs, [ign_img], disk=disk))
    assert failed["PRIORITY"] == "3"
    message = failed["MESSAGE"].lower()
    assert "gpg verification failure" in message or "signature" in message, failed
    wiped = partitions(disk)
    assert wiped.get("label") == "gpt"
    assert wiped.get("partitions", []) == []


def disk_eio(env: Env) -> None:
    """QEMU's blkdebug fails one write in the middle of the image: a clear I/O error in
    the journal, no bootable table left behind, powered off (no reboot loop)."""
    w = env.workdir("disk-eio")
    inst = journal_instrumentation(failure=True)
    files = installer_files(KEYRING, env.key.public) + inst["files"]
    ign_img = wrap(ignition(files, inst["units"]), w)
    disk = blank_disk(w / "disk.img")
    conf = w / "blkdebug.conf"
    mid = env.metal.size // 2 // 512
    conf.write_text(
        f'[inject-error]\nevent = "write_aio"\nerrno = "5"\nsector = "{mid}"\nonce = "on"\n'
    )
    disk_args = ["-drive", f"file=blkdebug:{conf}:{disk},format=raw,if=virtio"]
    kargs = (
        f"nestos.inst.install_dev=/dev/vda nestos.inst.image_url={URL}/metal.raw.gz {FAIL_KARGS}"
    )
    b = direct_boot(env, w, profiles.NESTOS, kargs, [ign_img], disk=disk, disk_args=disk_args)
    failed = failed_install(b)
    message = failed["MESSAGE"].lower()
    assert any(m in message for m in ("input/output error", "os error 5")), failed
    assert partitions(disk).get("partitions", []) == []


SCENARIOS: dict[str, Callable[[Env], None]] = {
    "iso-autoinstall": iso_autoinstall,
    "pxe-network": pxe_network,
    "stream": stream,
    "journal": journal,
    "resume": resume,
    "bad-signature": bad_signature,
    "disk-eio": disk_eio,
}


@dataclass
class Fleet:
    boots: dict[int, Boot]
    configs: list[str]
    workdir: Path
    wall: float


@dataclass
class Launched:
    futures: dict[str, Future[float]]
    seconds: dict[str, float] = field(default_factory=dict)  # also for failed ones
    fleet: Future[Fleet] | None = None


def _timed(fn: Callable[[Env], None], env: Env, name: str, out: dict[str, float]) -> float:
    t = time.monotonic()
    try:
        fn(env)
    finally:
        out[name] = time.monotonic() - t
    return out[name]


def _fleet_when_free(env: Env, singles: list[Future[float]]) -> Fleet:
    """fleet-4 starts as soon as at most one single-VM scenario is left running: the
    four guests then share the host with that one, and no core idles while the last
    single scenario finishes alone."""
    while sum(not f.done() for f in singles) > 1:
        wait([f for f in singles if not f.done()], return_when=FIRST_COMPLETED)
    return fleet_run(env)


@pytest.fixture(scope="module")
def launched(env: Env, request: pytest.FixtureRequest) -> Iterator[Launched]:
    """The selected single-VM scenarios, two at a time, started on first use; then
    fleet-4 (if selected) once the last single scenario is running."""
    items = [i for i in request.session.items if isinstance(i, pytest.Function)]
    selected = {
        item.callspec.params["name"]
        for item in items
        if hasattr(item, "callspec") and "name" in item.callspec.params
    }
    pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="scenario")
    seconds: dict[str, float] = {}
    futures = {
        name: pool.submit(_timed, fn, env, name, seconds)
        for name, fn in SCENARIOS.items()
        if name in selected
    }
    fleet_pool = ThreadPoolExecutor(1, thread_name_prefix="fleet")
    fleet = None
    if any(i.originalname == "test_fleet" for i in items):
        fleet = fleet_pool.submit(_fleet_when_free, env, list(futures.values()))
    started = Launched(futures, seconds, fleet)
    try:
        yield started
    finally:
        end_pool(pool, futures.values())
        end_pool(fleet_pool, [fleet] if fleet else [])


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.scenario(n), id=n) for n in SCENARIOS]
)
def test_scenario(name: str, launched: Launched, request: pytest.FixtureRequest) -> None:
    fut = launched.futures[name]
    try:
        fut.result()
    finally:
        # The scenario's own time (it shared the host with the other running VMs).
        if name in launched.seconds:
            request.node.user_properties.append(("scenario_seconds", launched.seconds[name]))


def fleet_run(env: Env) -> Fleet:
    """Four VMs PXE-boot at once from one nginx (one port each, for the figures), each
    with its own Ignition config."""
    w = env.workdir("fleet")
    configs = [
        json.dumps({"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": f"vm{i}"}]}})
        for i in range(FLEET)
    ]
    ign_img = wrap(ignition(installer_files(KEYRING, env.key.public)), w)
    results: dict[int, Boot] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        d = w / f"vm{i}"
        d.mkdir()
        url = env.publish(f"fleet/vm{i}.ign", configs[i])
        kargs = (
            f"nestos.inst.install_dev=/dev/vda nestos.inst.image_url={URL}/metal.raw.gz "
            f"nestos.inst.ignition_url={url}"
        )
        b = pxe_boot(env, d, profiles.NESTOS, kargs, [ign_img], disk=blank_disk(d / "disk.img"),
                     port=env.web.ports[1 + i])  # fmt: skip
        with lock:
            results[i] = b

    t = time.monotonic()
    pool = ThreadPoolExecutor(FLEET)
    futs = [pool.submit(one, i) for i in range(FLEET)]
    try:
        for f in futs:
            f.result()
    finally:
        end_pool(pool, futs)
    return Fleet(results, configs, w, time.monotonic() - t)


@pytest.mark.scenario("fleet-4")
def test_fleet(env: Env, launched: Launched, request: pytest.FixtureRequest) -> None:
    """fleet-4: all four disks verified; per-VM install time (host clock from QEMU
    start to "Install complete.") and bytes served reported."""
    assert launched.fleet is not None
    fleet = launched.fleet.result()
    w, configs, results = fleet.workdir, fleet.configs, fleet.boots
    request.node.user_properties.append(("scenario_seconds", fleet.wall))
    served: dict[int, int] = {}
    for h in env.web.hits():
        if h.port in env.web.ports[1:]:
            i = env.web.ports.index(h.port) - 1
            served[i] = served.get(i, 0) + h.bytes_sent
    figures: dict[str, Any] = {"wall_seconds": round(fleet.wall, 1), "vms": []}
    for i in range(FLEET):
        b = results[i]
        figures["vms"].append(
            {
                "vm": i,
                "install_seconds": round(b.marks.get("Install complete.", -1), 1),
                "bytes_served": served.get(i, 0),
            }
        )
    print("fleet-4:", json.dumps(figures))
    request.node.user_properties.append(("scenario_details", figures))
    for i in range(FLEET):
        b = results[i]
        assert not b.timed_out, b.log[-3000:]
        assert "Install complete." in b.log, b.log[-3000:]
        assert_installed(w / f"vm{i}" / "disk.img", env.metal, w / f"vm{i}", configs[i])
        assert served.get(i, 0) >= env.metal.path.stat().st_size
