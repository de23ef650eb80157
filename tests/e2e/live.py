"""Live media for the end-to-end tests: a bootable live ISO laid out like NestOS (or
CoreOS) live media, and the PXE files extracted from it (docs/e2e-harness.md).

Boot flow of the media, as on real live media:
1. isolinux (BIOS, El Torito) or iPXE loads `images/pxeboot/vmlinuz` with the initrds
   `images/pxeboot/initrd.img`, `images/pxeboot/rootfs.img` and the Ignition embed
   area `images/ignition.img` (a cpio.xz holding `config.ign`, or zeros when empty).
   The kernel command line is the isolinux `append` line, whose tail is the karg embed
   area listed in `nestos/kargs.json`: `iso kargs modify` edits what the kernel gets.
2. The live initramfs (Debian kernel, systemd, Debian's `ignition`, the harness module
   tests/e2e/dracut/90nestos-e2e-live; no Python) mounts the live root `/root.ext4`
   (from rootfs.img) on /sysroot, runs Ignition's files stage on it with `/config.ign`
   and switches root.
3. The live root (systemd, Python, nestos-installer from this checkout via
   dracut/50nestos-installer, DHCP via tests/e2e/dracut/90nestos-e2e-root) runs our
   generator: `nestos.inst.*` kargs or installer.d files make it install.

Everything slow (kernel package, dracut images, root file system, pristine ISOs) is
cached in /var/tmp/nestos-e2e-cache, keyed by the files it is built from.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nestos_inst import profile as profiles
from tests.e2e.vm import (
    CACHE,
    REPO,
    Kernel,
    _run,
    _tree_digest,
    cpio_of,
    dracut_image,
    initramfs,
    prune,
)

HARNESS_DRACUT = REPO / "tests" / "e2e" / "dracut"
LIVE_INITRD_MODULES = "base systemd systemd-initrd systemd-modules-load udev-rules nestos-e2e-live"
LIVE_INITRD_DRIVERS = "loop ext4 crc32c_generic"
IGNITION_AREA = 256 * 1024
# features.json of the ISO and of the live initramfs (what NestOS media declare).
FEATURES = {
    "installer-config": True,
    "installer-config-directives": {"console": True},
    "live-initrd-network": True,
}
KARG_AREA = 1139
ISOLINUX_DIR = Path("/usr/lib/ISOLINUX")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
# The default kargs of our media: the console on the serial port (QEMU -serial file),
# no IO-APIC timer check (it can fail on a loaded TCG host and panic the guest).
BASE_KARGS = "console=ttyS0 panic=-1 no_timer_check systemd.show_status=1"
ISOLINUX_HEAD = (
    "prompt 0\ntimeout 0\ndefault live\nlabel live\n  kernel /images/pxeboot/vmlinuz\n"
    "  append initrd=/images/pxeboot/initrd.img,/images/pxeboot/rootfs.img,"
    "/images/ignition.img "
)


def _brand(profile: profiles.Profile) -> str:
    return "nestos" if profile is profiles.NESTOS else "coreos"


def live_initrd(k: Kernel) -> Path:
    """The live initramfs (zstd): systemd + Debian's ignition + the harness module."""
    return dracut_image(
        k,
        "live-initrd",
        LIVE_INITRD_MODULES,
        LIVE_INITRD_DRIVERS,
        extra_moddirs=(HARNESS_DRACUT / "90nestos-e2e-live",),
        with_installer=False,
        compress="--zstd",
    )


def live_rootfs(k: Kernel) -> Path:
    """rootfs.img: a zstd cpio holding `/root.ext4`, the live root file system.

    The tree is a dracut image with our installer module, unpacked and turned into a
    normal root (no initrd-release, a fixed machine-id so systemd applies no presets,
    SELinux marked disabled for Ignition's relabel step).
    """
    tree_img = initramfs(k)
    out = CACHE / f"rootfs-{_tree_digest(Path(__file__), extra=tree_img.name)}.img"
    if out.exists():
        return out
    prune("rootfs-*.img")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tree = Path(tmp) / "root"
        tree.mkdir()
        with tree_img.open("rb") as f:
            subprocess.run(
                ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                stdin=f,
                cwd=tree,
                check=True,
            )
        etc = tree / "etc"
        for name in ("initrd-release", "os-release"):
            (etc / name).unlink(missing_ok=True)
        (etc / "os-release").write_text(
            'NAME="NestOS e2e live"\nID=nestos\nVERSION_ID=e2e\nPRETTY_NAME="NestOS e2e live"\n'
        )
        (etc / "machine-id").unlink(missing_ok=True)
        (etc / "machine-id").write_text("4e6573744f53206532652068617273ee\n")
        (etc / "selinux").mkdir(exist_ok=True)
        (etc / "selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
        (etc / "modules-load.d").mkdir(exist_ok=True)
        (etc / "modules-load.d/nestos-e2e.conf").write_text(
            "virtio_pci\nvirtio_blk\nvirtio_net\ncrc32c_generic\next4\n"
        )
        (etc / "fstab").write_text("")
        units = tree / "usr/lib/systemd/system"
        # Without an install the live root boots to multi-user.target (where units
        # from a live Ignition config usually hook in); the generator overrides it.
        multi = units / "multi-user.target"
        if not multi.exists():
            shutil.copyfile("/lib/systemd/system/multi-user.target", multi)
        (etc / "systemd/system/default.target").unlink(missing_ok=True)  # initrd.target
        default = units / "default.target"
        default.unlink(missing_ok=True)
        default.symlink_to("multi-user.target")
        for d in ("var/tmp", "tmp", "root", "sysroot"):
            (tree / d).mkdir(parents=True, exist_ok=True)
        # Room for the tree, its metadata and what Ignition writes; every byte of
        # it is decompressed into the guest's RAM at each boot, so no more.
        entries = list(tree.rglob("*"))
        size = sum(p.lstat().st_size for p in entries) * 11 // 10 + (16 << 20)
        inodes = len(entries) * 3 // 2 + 1024
        ext4 = Path(tmp) / "cpio" / "root.ext4"
        ext4.parent.mkdir()
        with ext4.open("wb") as f:
            f.truncate(size // 4096 * 4096)
        _run(
            ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=0",
             "-N", str(inodes), "-L", "live-root", "-d", str(tree), str(ext4)]
        )  # fmt: skip
        raw = Path(tmp) / "rootfs.cpio"
        cpio_of(ext4.parent, raw)
        part = Path(tmp) / "rootfs.img"
        _run(["zstd", "-q", "-T2", "-10", "-o", str(part), str(raw)])
        part.rename(out)
    return out


@dataclass(frozen=True)
class LiveIso:
    path: Path
    profile: profiles.Profile
    default_kargs: str


def _default_kargs(profile: profiles.Profile) -> str:
    return f"{BASE_KARGS} {profile.liveiso_karg}=e2e ignition.firstboot ignition.platform.id=metal"


def _karg_area(kargs: str) -> str:
    body = kargs + "\n"
    return body + "#" * (KARG_AREA - len(body))


def brand_cpio(profile: profiles.Profile, out: Path) -> Path:
    """What makes the live initramfs a NestOS (or CoreOS) one: the live marker and
    features.json (read by `pxe customize`/`iso customize`)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        marker = root / profile.live_initramfs_marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")
        feats = root / profile.initrd_features
        feats.parent.mkdir(parents=True, exist_ok=True)
        feats.write_text(json.dumps(FEATURES))
        return cpio_of(root, out)


def build_live_iso(k: Kernel, profile: profiles.Profile = profiles.NESTOS) -> LiveIso:
    """A pristine live ISO in the cache (copy it before editing: see `live_iso_copy`)."""
    initrd = live_initrd(k)
    rootfs = live_rootfs(k)
    key = _tree_digest(
        Path(__file__), extra=f"{initrd.name}|{rootfs.name}|{k.vmlinuz.name}|{profile.name}"
    )
    brand = _brand(profile)
    out = CACHE / f"live-{brand}-{key}.iso"
    default = _default_kargs(profile)
    if out.exists():
        return LiveIso(out, profile, default)
    prune(f"live-{brand}-*.iso")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "iso"
        pxe = root / "images/pxeboot"
        pxe.mkdir(parents=True)
        shutil.copyfile(k.vmlinuz, pxe / "vmlinuz")
        with (pxe / "initrd.img").open("wb") as f:
            f.write(initrd.read_bytes())
            # The kernel looks for the next archive's cpio magic at 4-byte alignment.
            f.write(bytes(-f.tell() % 4))
            f.write(brand_cpio(profile, Path(tmp) / "brand.cpio").read_bytes())
        shutil.copyfile(rootfs, pxe / "rootfs.img")
        (root / "images/ignition.img").write_bytes(bytes(IGNITION_AREA))
        iso_cfg = root / "isolinux"
        iso_cfg.mkdir()
        shutil.copyfile(ISOLINUX_DIR / "isolinux.bin", iso_cfg / "isolinux.bin")
        shutil.copyfile(SYSLINUX_BIOS / "ldlinux.c32", iso_cfg / "ldlinux.c32")
        (iso_cfg / "isolinux.cfg").write_text(ISOLINUX_HEAD + _karg_area(default) + "\n")
        meta = root / brand
        meta.mkdir()
        (meta / "igninfo.json").write_text('{"file": "images/ignition.img"}')
        (meta / "kargs.json").write_text(
            json.dumps(
                {
                    "default": default,
                    "files": [{"path": "isolinux/isolinux.cfg", "offset": len(ISOLINUX_HEAD)}],
                    "size": KARG_AREA,
                },
                indent=2,
            )
        )
        (meta / "features.json").write_text(json.dumps(FEATURES))
        part = Path(tmp) / "live.iso"
        volid = "nestos-e2e-live" if profile is profiles.NESTOS else "fedora-coreos-e2e"
        _run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-V", volid, "-o", str(part),
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
             "-boot-load-size", "4", str(root)]
        )  # fmt: skip
        _boot_info_table(part)
        part.rename(out)
    return LiveIso(out, profile, default)


def _boot_info_table(iso: Path) -> None:
    """Write isolinux's boot info table (what `mkisofs -boot-info-table` does).

    xorriso 1.5.4's `-as mkisofs -boot-info-table` also switches the ISO 9660 names
    to lower case, which no real live ISO has; so the table is patched in here:
    at offset 8 of isolinux.bin, the LBAs of the PVD and of the file, its length, and
    the 32-bit sum of its words from offset 64.
    """
    proc = _run(["xorriso", "-indev", str(iso), "-find", "/isolinux/isolinux.bin",
                 "-exec", "report_lba"])  # fmt: skip
    text = (proc.stdout + proc.stderr).decode()
    fields = text.split("File data lba:")[1].split(",")
    lba, size = int(fields[1]), int(fields[3])
    with iso.open("r+b") as f:
        f.seek(lba * 2048)
        data = bytearray(f.read(size))
        body = data[64:] + bytes(-len(data[64:]) % 4)
        csum = sum(struct.unpack(f"<{len(body) // 4}I", body)) & 0xFFFFFFFF
        data[8:64] = struct.pack("<4I", 16, lba, size, csum) + bytes(40)
        f.seek(lba * 2048)
        f.write(data)


def live_iso_copy(k: Kernel, dest: Path, profile: profiles.Profile = profiles.NESTOS) -> Path:
    """A fresh copy of the pristine live ISO at `dest`, for a test to edit."""
    shutil.copyfile(build_live_iso(k, profile).path, dest)
    os.chmod(dest, 0o644)
    return dest


def cdrom_args(iso: Path, disk: Path | None, *, disk_opts: str = "") -> list[str]:
    """Boot `iso` from the CD drive (isolinux); `disk` becomes the first virtio disk."""
    args = ["-boot", "d", "-cdrom", str(iso)]
    if disk is not None:
        args += ["-drive", f"file={disk},format=raw,if=virtio{disk_opts}"]
    return args


def direct_args(
    vmlinuz: Path, initrds: list[Path], kargs: str, workdir: Path, disk: Path | None = None
) -> list[str]:
    """Boot kernel + initrds (concatenated, as a boot loader would) with `kargs`,
    loaded by QEMU itself: the PXE files without the network boot's transfer time."""
    initrd = workdir / "direct-initrd.img"
    with initrd.open("wb") as out:
        for part in initrds:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            out.write(bytes(-out.tell() % 4))
    args = ["-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", kargs]
    if disk is not None:
        args += ["-drive", f"file={disk},format=raw,if=virtio"]
    return args


def pxe_args(
    tftp: Path,
    kernel_url: str,
    initrd_urls: list[str],
    kargs: str,
    port: int,
    *,
    disk: Path | None = None,
    disk_opts: str = "",
) -> list[str]:
    """Network boot with QEMU's TFTP server and Debian's iPXE ROM: `boot.ipxe` (in the
    TFTP dir `tftp`) fetches the kernel and initrds over HTTP from the mirror (paths
    relative to http://10.0.2.100/) and boots them with `kargs`."""
    from tests.e2e.vm import GUEST_SERVER, user_net

    tftp.mkdir(parents=True, exist_ok=True)
    base = f"http://{GUEST_SERVER}/"
    lines = ["#!ipxe", "dhcp", f"kernel {base}{kernel_url} {kargs}"]
    lines += [f"initrd {base}{u}" for u in initrd_urls]
    lines += ["boot", ""]
    (tftp / "boot.ipxe").write_text("\n".join(lines))
    args = ["-boot", "n", *user_net(port, tftp=tftp, bootfile="boot.ipxe")]
    if disk is not None:
        args += ["-drive", f"file={disk},format=raw,if=virtio{disk_opts}"]
    return args


def pxe_kargs(profile: profiles.Profile = profiles.NESTOS, extra: str = "") -> str:
    """The live kargs a PXE menu gives (the ISO's defaults, without the ISO marker).
    `NESTOS_E2E_DEBUG_KARGS` (environment) adds kargs for looking into a slow or
    failing boot, e.g. `systemd.log_target=kmsg` for timestamped unit starts."""
    base = f"{BASE_KARGS} ignition.firstboot ignition.platform.id=metal"
    debug = os.environ.get("NESTOS_E2E_DEBUG_KARGS", "")
    return f"{base} {extra} {debug}".strip()


def main(argv: list[str] | None = None) -> int:
    """`make live-iso`: build (or reuse) the live ISO, print a command that boots it."""
    import argparse
    import shlex

    from tests.e2e.vm import kernel, user_net

    ap = argparse.ArgumentParser(prog="make live-iso")
    ap.add_argument("--profile", choices=("nestos", "coreos"), default="nestos")
    ap.add_argument("--port", type=int, default=8080, help="127.0.0.1 port of your mirror")
    args = ap.parse_args(argv)
    prof = profiles.NESTOS if args.profile == "nestos" else profiles.COREOS
    k = kernel()
    iso = build_live_iso(k, prof)
    disk = Path(tempfile.gettempdir()) / "nestos-live-disk.img"
    if not disk.exists():
        with disk.open("wb") as f:
            f.truncate(160 << 20)
    argv_q = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic",
        "-no-reboot", *cdrom_args(iso.path, disk), *user_net(args.port),
    ]  # fmt: skip
    print(f"live ISO: {iso.path}\ndefault kargs: {iso.default_kargs}\nboot it with:\n")
    print(" ".join(shlex.quote(a) for a in argv_q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
