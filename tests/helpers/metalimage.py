"""Build small NestOS-like metal disk images with the real tools (sfdisk, mkfs).

Layout, like a NestOS/FCOS metal image: GPT with BIOS-BOOT (random bytes), EFI-SYSTEM
(vfat), `boot` (ext4 holding a BLS entry with `ignition.platform.id=metal`,
`ignition.firstboot`, `grub2/grub.cfg` with CONSOLE-SETTINGS markers and
`<brand>/platforms.json`) and `root` (xfs). 512- and 4096-byte-sector variants; the
4096 one is partitioned through a `losetup --sector-size 4096` device because sfdisk
takes the sector size from the device. Filesystems are built in side files (ext4 is
populated with `mke2fs -d`, nothing is mounted) and copied to their offsets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.helpers.gpgkey import SigningKey
from tests.helpers.loop import loop_device

MiB = 1 << 20
Fmt = Literal["raw", "xz", "xz-mt", "gzip", "zstd"]

BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
EFI_SYSTEM = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

BLS_OPTIONS = (
    "root=UUID=6b3c2b0e-1a7e-4a4e-9d1e-0c6a6d2a1b7f rw mitigations=auto,nosmt "
    "ignition.platform.id=metal $ignition_firstboot "
    "ostree=/ostree/boot.1/nestos/0123abcd/0"
)
FIRSTBOOT = (
    "# Set by nestos-installer tests\n"
    'set ignition_firstboot="ignition.firstboot ${ignition_network_kcmdline}"\n'
)
GRUB_CFG = (
    "set pager=1\n"
    "# Any console settings go here.\n"
    "# CONSOLE-SETTINGS-START\n"
    "# CONSOLE-SETTINGS-END\n"
    "\n"
    "if [ -f ${config_directory}/console.cfg ]; then\n"
    "  source ${config_directory}/console.cfg\n"
    "fi\n"
    "blscfg\n"
)
PLATFORMS: dict[str, dict[str, list[str]]] = {
    "metal": {"kernel_arguments": []},
    "qemu": {
        "grub_commands": [
            "serial --speed=115200",
            "terminal_input serial console",
            "terminal_output serial console",
        ],
        "kernel_arguments": ["console=tty0", "console=ttyS0,115200n8"],
    },
    "aws": {"kernel_arguments": ["console=ttyS0,115200n8"]},
}


@dataclass(frozen=True)
class Recipe:
    """Everything that makes one image different from another (the cache key)."""

    sector_size: int = 512
    size_mib: int = 48
    brand: str = "nestos"  # dir holding platforms.json: nestos/ or coreos/
    boot_label: str = "boot"
    second_boot_label: bool = False  # root gets an ext4 labeled `boot` too
    bls_entries: tuple[str, ...] = ("ostree-1.conf",)
    platforms: bool = True
    seed: int = 1


@dataclass
class MetalImage:
    recipe: Recipe
    raw: Path  # the decompressed disk image
    path: Path  # the artifact as served (compressed or raw)
    sig: Path | None
    partitions: list[dict[str, object]] = field(default_factory=list)  # sfdisk --json

    @property
    def size(self) -> int:
        return self.raw.stat().st_size

    def part(self, name: str) -> tuple[int, int]:
        """(offset, length) in bytes of the partition with GPT name `name`."""
        ss = self.recipe.sector_size
        for p in self.partitions:
            if p.get("name") == name:
                return int(str(p["start"])) * ss, int(str(p["size"])) * ss
        raise KeyError(name)


def _run(*argv: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    full = dict(os.environ)
    if env:
        full.update(env)
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=full, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def _partition(raw: Path, recipe: Recipe, sizes: dict[str, int]) -> list[dict[str, object]]:
    """Write the GPT with sfdisk on a loop device of the right sector size."""
    script = "label: gpt\n"
    script += f'size={sizes["bios"] // 1024}KiB, type={BIOS_BOOT}, name="BIOS-BOOT"\n'
    script += f'size={sizes["efi"] // 1024}KiB, type={EFI_SYSTEM}, name="EFI-SYSTEM"\n'
    script += f'size={sizes["boot"] // 1024}KiB, type={LINUX_FS}, name="boot"\n'
    script += f'type={LINUX_FS}, name="root"\n'
    with loop_device(raw, sector_size=recipe.sector_size, partitions=False) as dev:
        _run("sfdisk", "--quiet", "--wipe", "always", dev, stdin=script.encode())
        table = json.loads(_run("sfdisk", "--json", dev))
    parts: list[dict[str, object]] = table["partitiontable"]["partitions"]
    return parts


def _boot_tree(root: Path, recipe: Recipe) -> None:
    entries = root / "loader" / "entries"
    entries.mkdir(parents=True)
    for i, name in enumerate(recipe.bls_entries):
        (entries / name).write_text(
            f"title NestOS 24.03.{i} (ostree:{i})\n"
            f"version {i + 1}\n"
            f"options {BLS_OPTIONS}\n"
            "linux /ostree/nestos-0123abcd/vmlinuz-6.6.0\n"
            "initrd /ostree/nestos-0123abcd/initramfs-6.6.0.img\n"
        )
    (root / "ignition.firstboot").write_text(FIRSTBOOT)
    (root / "grub2").mkdir()
    (root / "grub2" / "grub.cfg").write_text(GRUB_CFG)
    if recipe.platforms:
        (root / recipe.brand).mkdir()
        (root / recipe.brand / "platforms.json").write_text(json.dumps(PLATFORMS, indent=2))
    ostree = root / "ostree" / "nestos-0123abcd"
    ostree.mkdir(parents=True)
    (ostree / "vmlinuz-6.6.0").write_bytes(_pattern(recipe.seed, 256 * 1024))
    (ostree / "initramfs-6.6.0.img").write_bytes(_pattern(recipe.seed + 1, 512 * 1024))


def _pattern(seed: int, n: int) -> bytes:
    """Deterministic incompressible bytes (so images differ and compress realistically)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 4
        counter += 1
    return bytes(out[:n])


def build_raw(dest: Path, recipe: Recipe) -> list[dict[str, object]]:
    """Create the uncompressed image at `dest`; returns sfdisk's partition list."""
    ss = recipe.sector_size
    sizes = {"bios": 1 * MiB, "efi": 8 * MiB, "boot": 16 * MiB}
    with open(dest, "wb") as f:
        f.truncate(recipe.size_mib * MiB)
    parts = _partition(dest, recipe, sizes)
    work = Path(tempfile.mkdtemp(prefix="metalimage-"))
    try:
        by_name = {str(p["name"]): p for p in parts}

        def span(name: str) -> tuple[int, int]:
            p = by_name[name]
            return int(str(p["start"])) * ss, int(str(p["size"])) * ss

        def place(name: str, fs: Path) -> None:
            off, length = span(name)
            data = fs.read_bytes()
            assert len(data) <= length, name
            with open(dest, "r+b") as f:
                f.seek(off)
                f.write(data)

        # BIOS-BOOT: random bytes (stands in for GRUB's core.img).
        off, length = span("BIOS-BOOT")
        with open(dest, "r+b") as fr:
            fr.seek(off)
            fr.write(_pattern(recipe.seed + 7, length))

        efi = work / "efi.img"
        efi.write_bytes(b"")
        os.truncate(efi, span("EFI-SYSTEM")[1])
        _run("mkfs.vfat", "-S", str(ss), "-n", "EFI-SYSTEM", str(efi))
        place("EFI-SYSTEM", efi)

        tree = work / "boot"
        tree.mkdir()
        _boot_tree(tree, recipe)
        boot = work / "boot.img"
        boot.write_bytes(b"")
        os.truncate(boot, span("boot")[1])
        mke2fs = ["mkfs.ext4", "-q", "-F", "-L", recipe.boot_label, "-d", str(tree)]
        mke2fs += ["-U", f"00000000-0000-4000-8000-{recipe.seed:012x}"]
        if ss == 4096:
            mke2fs += ["-b", "4096"]
        _run(*mke2fs, str(boot), env={"E2FSPROGS_FAKE_TIME": "1700000000"})
        place("boot", boot)

        root = work / "root.img"
        root.write_bytes(b"")
        os.truncate(root, span("root")[1])
        if recipe.second_boot_label:
            _run("mkfs.ext4", "-q", "-F", "-L", "boot", str(root))
        else:
            xfs_env = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
            _run("mkfs.xfs", "-q", "-f", "-L", "root", "-s", f"size={ss}", str(root), env=xfs_env)
        place("root", root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return parts


def compress(raw: Path, fmt: Fmt, dest_dir: Path) -> Path:
    """Compress like distributions do (fast presets keep tests quick)."""
    if fmt == "raw":
        return raw
    suffix = {"xz": ".xz", "xz-mt": ".xz", "gzip": ".gz", "zstd": ".zst"}[fmt]
    out = dest_dir / (raw.name + ("-mt" if fmt == "xz-mt" else "") + suffix)
    argv = {
        "xz": ["xz", "-1", "-T1", "-c"],
        "xz-mt": ["xz", "-1", "-T2", "--block-size=4MiB", "-c"],
        "gzip": ["gzip", "-1", "-c", "-n"],
        "zstd": ["zstd", "-3", "-q", "-c"],
    }[fmt]
    with open(out, "wb") as f:
        subprocess.run([*argv, str(raw)], stdout=f, check=True)
    return out


class MetalImageFactory:
    """Builds each distinct recipe once per session; compressed/signed on demand."""

    def __init__(self, workdir: Path, key: SigningKey | None) -> None:
        self.workdir = workdir
        self.key = key
        self._raw: dict[Recipe, tuple[Path, list[dict[str, object]]]] = {}
        self._done: dict[tuple[Recipe, Fmt, bool], MetalImage] = {}

    def get(
        self, recipe: Recipe | None = None, fmt: Fmt = "xz", *, sign: bool = True
    ) -> MetalImage:
        recipe = recipe or Recipe()
        key = (recipe, fmt, sign)
        if key in self._done:
            return self._done[key]
        if recipe not in self._raw:
            d = self.workdir / f"r{len(self._raw)}"
            d.mkdir()
            raw = d / "metal.raw"
            self._raw[recipe] = (raw, build_raw(raw, recipe))
        raw, parts = self._raw[recipe]
        out_dir = self.workdir / f"f{len(self._done)}"
        out_dir.mkdir()
        path = compress(raw, fmt, out_dir) if fmt != "raw" else out_dir / "metal.raw"
        if fmt == "raw":
            shutil.copyfile(raw, path)
        sig = self.key.sign(path) if (sign and self.key) else None
        img = MetalImage(recipe, raw, path, sig, parts)
        self._done[key] = img
        return img
