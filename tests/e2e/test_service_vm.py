"""Service mode end to end: a dracut initramfs boots in QEMU (TCG) and installs.

The initramfs is Debian's kernel + our dracut module (installed from `make install
DESTDIR=`), with an appended cpio holding an installer.d config, a small signed metal
image, its key and an Ignition config. VM 1 installs to its blank disk and reboots
(QEMU exits with -no-reboot); VM 2 gets a corrupted image, fails, reaches
emergency.target (rd.emergency=poweroff ends the VM instead of a reboot loop) and leaves
its disk's partition table wiped; VM 3 (skip_reboot) installs and stops at a login
shell. All three run at once. Run alone with `make e2e`.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import blank_disk, boot_file, need, partitions
from tests.e2e.vm import Boot, Kernel, boot, cpio_of, end_pool, initramfs, kernel
from tests.helpers.gpgkey import SigningKey
from tests.helpers.metalimage import MetalImage, MetalImageFactory, Recipe

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20
IGNITION = '{"ignition": {"version": "3.3.0"}, "storage": {}}'
CMDLINE = (
    "nestos.inst.install_dev=/dev/vda nestos.inst.platform_id=qemu ip=dhcp "
    "rd.shell=0 rd.emergency=poweroff systemd.show_status=1"
)


@pytest.fixture(scope="module")
def vm_kernel() -> Kernel:
    need("qemu-system-x86_64", "dracut", "apt-get", "dpkg-deb", "depmod", "cpio", "debugfs")
    return kernel()


@pytest.fixture(scope="module")
def base_initrd(vm_kernel: Kernel) -> Path:
    return initramfs(vm_kernel)


@pytest.fixture(scope="module")
def metal(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> MetalImage:
    return MetalImageFactory(tmp_path_factory.mktemp("metal"), signing_key).get(Recipe(), "gzip")


def payload(workdir: Path, metal: MetalImage, key: SigningKey, *, corrupt: bool) -> Path:
    """The cpio appended to the initramfs: config, image, signature, key, Ignition."""
    root = workdir / "payload"
    data = root / "var/nestos-e2e"
    data.mkdir(parents=True)
    image = data / "metal.raw.gz"
    shutil.copyfile(metal.path, image)
    assert metal.sig is not None
    shutil.copyfile(metal.sig, data / "metal.raw.gz.sig")
    if corrupt:
        raw = bytearray(image.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
        image.write_bytes(bytes(raw))
    shutil.copyfile(key.public, data / "key.asc")
    (data / "config.ign").write_text(IGNITION)
    conf = root / "etc/nestos/installer.d"
    conf.mkdir(parents=True)
    (conf / "0000-e2e.yaml").write_text(
        "image-file: /var/nestos-e2e/metal.raw.gz\n"
        "ignition-file: /var/nestos-e2e/config.ign\n"
        "keyring: [/var/nestos-e2e/key.asc]\n"
        "append-karg: [nestos.e2e=1]\n"
    )
    mods = root / "etc/modules-load.d"
    mods.mkdir(parents=True)
    (mods / "nestos-e2e.conf").write_text("virtio_pci\nvirtio_blk\ncrc32c_generic\next4\n")
    return cpio_of(root, workdir / "payload.cpio")


@dataclass
class ServiceRuns:
    metal: MetalImage
    runs: list[Path]
    disks: list[Path]
    boots: list[Boot]


@pytest.fixture(scope="module")
def service_runs(
    tmp_path_factory: pytest.TempPathFactory,
    vm_kernel: Kernel,
    base_initrd: Path,
    metal: MetalImage,
    signing_key: SigningKey,
) -> ServiceRuns:
    """Three VMs at once (they are independent): a good install on a blank disk; a
    corrupted image on a disk that already holds the metal image's partition table; a
    good install with skip_reboot, which must end at a login shell, not a reboot."""
    tmp_path = tmp_path_factory.mktemp("service")
    runs = [tmp_path / f"run{i}" for i in (1, 2, 3)]
    disks = [r / "disk.img" for r in runs]
    for d, disk in zip(runs, disks, strict=True):
        d.mkdir()
        blank_disk(disk)
    with metal.raw.open("rb") as src, disks[1].open("r+b") as dst:
        shutil.copyfileobj(src, dst, MiB)
    assert [p.get("name") for p in partitions(disks[1])["partitions"]]
    # per VM: corrupted image, extra kernel arguments, console line that ends the VM
    vms = [(False, "", None), (True, "", None),
           (False, " nestos.inst.skip_reboot", "Starting login shell")]  # fmt: skip
    pool = ThreadPoolExecutor(3)
    futs: list[Future[Boot]] = []
    try:
        for run, disk, (corrupt, kargs, stop_on) in zip(runs, disks, vms, strict=True):
            parts = [base_initrd, payload(run, metal, signing_key, corrupt=corrupt)]
            job = pool.submit(boot, vm_kernel, parts, disk, CMDLINE + kargs, workdir=run,
                              timeout=1800, stop_on=stop_on)  # fmt: skip
            futs.append(job)
        boots = [f.result() for f in futs]
    finally:
        end_pool(pool, futs)
    return ServiceRuns(metal, runs, disks, boots)


def finished(runs: ServiceRuns, i: int, request: pytest.FixtureRequest) -> Boot:
    """VM `i + 1`'s boot, its own time recorded for the report; it must not have timed
    out (the three share the host, so the test's duration is not the scenario's)."""
    b = runs.boots[i]
    request.node.user_properties.append(("scenario_seconds", b.seconds))
    assert not b.timed_out, b.log[-4000:]
    return b


@pytest.mark.scenario("service-install")
def test_service_installs_and_reboots(
    service_runs: ServiceRuns, request: pytest.FixtureRequest
) -> None:
    """VM 1: installed, then rebooted."""
    log = finished(service_runs, 0, request).log
    run1, disk1, metal = service_runs.runs[0], service_runs.disks[0], service_runs.metal
    assert "Install complete." in log, log[-4000:]
    assert "Read disk" in log  # progress lines on the console
    assert "nestos-installer install (from /etc/nestos/installer.d/0000-e2e.yaml" in log
    assert "Emergency Mode" not in log
    assert "reboot: Restarting system" in log

    table = partitions(disk1)
    assert table["label"] == "gpt"
    names = [p.get("name") for p in table["partitions"]]
    assert names == [p.get("name") for p in metal.partitions]
    assert boot_file(disk1, "/ignition/config.ign", run1) == IGNITION
    bls = boot_file(disk1, "/loader/entries/ostree-1.conf", run1)
    options = next(line for line in bls.splitlines() if line.startswith("options "))
    assert "nestos.e2e=1" in options.split()
    assert "ignition.platform.id=qemu" in options.split()
    firstboot = boot_file(disk1, "/ignition.firstboot", run1)
    assert "rd.neednet=1 ip=dhcp " in firstboot


@pytest.mark.scenario("service-bad-image")
def test_service_bad_image_fails_safely(
    service_runs: ServiceRuns, request: pytest.FixtureRequest
) -> None:
    """VM 2: failure on the console, emergency.target, no reboot, table wiped."""
    log = finished(service_runs, 1, request).log
    assert "Error: install failed" in log, log[-4000:]
    assert "Resetting partition table" in log
    assert "Emergency Mode" in log
    assert "Install complete." not in log
    assert "reboot: Restarting system" not in log
    assert "reboot: Power down" in log
    wiped = partitions(service_runs.disks[1])
    assert wiped.get("label") == "gpt"
    assert wiped.get("partitions", []) == []


@pytest.mark.scenario("service-skip-reboot")
def test_service_skip_reboot_stops_at_shell(
    service_runs: ServiceRuns, request: pytest.FixtureRequest
) -> None:
    """VM 3: skip_reboot -> installed, login shell on the console, no reboot."""
    log = finished(service_runs, 2, request).log
    assert "Install complete." in log, log[-4000:]
    assert "NestOS install complete. Starting login shell" in log
    assert "reboot: Restarting system" not in log
    assert partitions(service_runs.disks[2]).get("label") == "gpt"
