"""`install` with the image written around the page cache (fast path `direct-io`) and
with every trick off (NESTOS_INSTALLER_FAST_PATHS=none): the same disk, the same
messages, the same exit codes, on real loop devices with 512- and 4096-byte sectors
(root). The io-level cases (odd lengths, EINVAL fallback, cache coherency) are in
tests/unit/test_io_direct.py."""

from __future__ import annotations

import contextlib
import lzma
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.loop import loop_device, mounted
from tests.helpers.metalimage import MetalImage, MetalImageFactory, Recipe

pytestmark = pytest.mark.root

MiB = 1 << 20
FILL = b"\xbb"
MODES = ("all", "none")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> MetalImageFactory:
    return MetalImageFactory(tmp_path_factory.mktemp("metal"), signing_key)


def install(dev: str, mode: str, *args: str | os.PathLike[str]) -> tuple[int, str]:
    proc = run_cli("install", dev, *args, env={"NESTOS_INSTALLER_FAST_PATHS": mode}, timeout=300)
    return proc.returncode, proc.stderr.decode()


NOISE = (
    "Read disk ",  # progress: how many lines depends on timing
    # the duplicate-boot note lists other test runs' loop devices labeled `boot`
    "Note: detected other devices with a filesystem labeled",
    "  - /dev/",
    "The installed OS may not work correctly if there are multiple boot",
    "Before rebooting, investigate whether these filesystems are needed",
    "wiping them with `wipefs -a`.",
)


def messages(err: str, dev: str) -> str:
    """stderr without the lines that depend on timing or on other runs' devices."""
    lines = err.replace(dev, "DEV").splitlines()
    return "\n".join(line for line in lines if line and not line.startswith(NOISE))


def read_at(path: str | os.PathLike[str], offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@contextlib.contextmanager
def disk_with_saved(tmp_path: Path, sector_size: int, data_at_mib: int) -> Iterator[str]:
    """A 64 MiB disk of FILL bytes with a GPT whose partition 5 (`data`, from
    `data_at_mib` to the end) holds an ext4 filesystem with one file."""
    img = tmp_path / f"disk-{sector_size}.img"
    img.write_bytes(FILL * (64 * MiB))
    with loop_device(img, sector_size=sector_size, partitions=False) as dev:
        start = data_at_mib * MiB // sector_size
        script = f"label: gpt\n5 : start={start}, name=data\n"
        subprocess.run(["sfdisk", "--quiet", dev], input=script.encode(), check=True)
        subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        subprocess.run(["mkfs.ext4", "-q", "-F", f"{dev}p5"], check=True, capture_output=True)
        with mounted(f"{dev}p5") as where:
            (where / "precious.txt").write_text("keep me\n")
        yield dev


@pytest.mark.parametrize("sector_size", [512, 4096])
@pytest.mark.parametrize("fmt", ["zstd", "xz-mt"])
def test_same_install_both_ways(
    tmp_path: Path,
    factory: MetalImageFactory,
    signing_key: SigningKey,
    sector_size: int,
    fmt: str,
) -> None:
    """A verified install with an Ignition config (so /boot is mounted from the freshly
    written disk): same messages, exit code and image bytes with the trick on and off."""
    img: MetalImage = factory.get(Recipe(sector_size=sector_size), fmt)  # type: ignore[arg-type]
    ign = tmp_path / "config.ign"
    ign.write_text('{"ignition": {"version": "3.4.0"}}')
    boot_off, boot_len = img.part("boot")
    outside = read_at(img.raw, 0, boot_off), read_at(img.raw, boot_off + boot_len, img.size)
    seen = {}
    for mode in MODES:
        disk = tmp_path / f"disk-{mode}.img"
        disk.write_bytes(FILL * (64 * MiB))
        with loop_device(disk, sector_size=sector_size, partitions=False) as dev:
            rc, err = install(dev, mode, "-f", img.path, "--keyring", signing_key.public, "-i", ign)
            assert rc == 0, err
            assert "Install complete." in err
            with mounted(f"{dev}p3") as boot:
                assert (boot / "ignition" / "config.ign").read_bytes() == ign.read_bytes()
            seen[mode] = messages(err, dev)
        assert read_at(disk, 0, boot_off) == outside[0]
        assert read_at(disk, boot_off + boot_len, img.size - boot_off - boot_len) == outside[1]
        # between the image and the backup GPT in the disk's last MiB: untouched
        assert read_at(disk, img.size, 63 * MiB - img.size) == FILL * (63 * MiB - img.size)
        disk.unlink()
    assert seen["all"] == seen["none"]


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_odd_length_image_before_a_saved_partition(
    tmp_path: Path, factory: MetalImageFactory, sector_size: int
) -> None:
    """An image whose length is not a multiple of 4096 (nor of the sector size) ends
    40 MiB before a saved partition: every byte between them keeps its old value and
    the saved filesystem stays readable, both ways; the disks come out identical."""
    base = factory.get(Recipe(sector_size=sector_size), "raw", sign=False)
    raw = base.raw.read_bytes() + b"\x42" * 1001
    src = tmp_path / "odd.raw.xz"
    src.write_bytes(lzma.compress(raw, preset=1))
    seen: dict[str, str] = {}
    disks: dict[str, bytes] = {}
    for mode in MODES:
        with disk_with_saved(tmp_path, sector_size, data_at_mib=56) as dev:
            rc, err = install(dev, mode, "-f", src, "--insecure", "--save-partlabel", "data")
            assert rc == 0, err
            assert 'Saving partition 5 ("data") to new partition 5' in err
            subprocess.run(["partx", "-u", dev], capture_output=True, check=False)
            with mounted(f"{dev}p5", options="ro") as where:
                assert (where / "precious.txt").read_text() == "keep me\n"
            seen[mode] = messages(err, dev)
        disk = tmp_path / f"disk-{sector_size}.img"
        assert read_at(disk, MiB, len(raw) - MiB) == raw[MiB:]
        assert read_at(disk, len(raw), 56 * MiB - len(raw)) == FILL * (56 * MiB - len(raw))
        disks[mode] = disk.read_bytes()
        disk.unlink()
    assert seen["all"] == seen["none"]
    # The tables (fresh UUIDs) and the saved filesystem (made anew for each run) differ
    # between the runs: compare what lies between them.
    assert disks["all"][MiB : 56 * MiB] == disks["none"][MiB : 56 * MiB]


def test_device_failing_mid_image(tmp_path: Path) -> None:
    """The device under the target runs out of space half-way (a loop device over a
    sparse file on a 24 MiB tmpfs): exit 1, the error chain names the errno, the table
    is reset, no traceback. Direct writes report the failing write itself; buffered
    ones can only learn it from fsync (the kernel's writeback error is EIO)."""
    data = os.urandom(40 * MiB) + b"\x17" * 999  # incompressible: fills the tmpfs
    src = tmp_path / "big.raw.xz"
    src.write_bytes(lzma.compress(data, preset=0))
    for mode in MODES:
        with mounted("tmpfs", fstype="tmpfs", options="size=24m") as small:
            backing = small / "disk.img"
            with open(backing, "wb") as f:
                f.truncate(64 * MiB)
            with loop_device(backing, partitions=False) as dev:
                rc, err = install(dev, mode, "-f", src, "--insecure")
        assert rc == 1, err
        assert "Traceback" not in err
        assert "\nResetting partition table\n" in err
        assert err.rstrip().endswith("Error: install failed")
        if mode == "all":
            assert "\nError: writing " in err and " bytes at " in err, err
            assert "No space left on device (os error 28)" in err, err
        else:
            assert "\nError: syncing data to disk\n" in err, err
            assert "Input/output error (os error 5)" in err, err
