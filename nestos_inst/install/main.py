"""The install flow of docs/compat.md#install-validation: validate, check, write, customise, or
wipe.

Everything that can be checked is checked before the first byte is written
(`prepare`): arguments, the Ignition config and its digest, partition filters, the
target, the image source and its signature. Only then does `execute` touch the disk,
and any failure from there on replaces the partition table by an empty one (keeping
saved partitions) unless --preserve-on-error.

Beyond upstream, the target may be a regular file (a VM disk image): it is written
like a disk, and /boot is edited through a loop device attached for that step only.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FormatError, NestosError, context, format_chain, signals_deferred
from ..io.files import KEYRING_LIMIT, read_limited
from ..profile import NESTOS, Profile
from ..progress import Progress
from ..report import say, write
from .config import InstallConfig, check_conflicts
from .ignition import check_ignition_url, check_json, read_ignition_file
from .options import default_architecture
from .postinstall import BootEdits, apply
from .writer import MiB, write_image

if TYPE_CHECKING:
    from ..disk.blockdev import OtherDisksScan
    from ..disk.saved import Filter, SavedPartitions
    from ..sources import ImageReader, ImageSource, SourceStream

BOOT_LABEL = "boot"


@dataclass
class Target:
    """The destination: a block device or a regular file (disk image)."""

    path: str
    canonical: str
    is_file: bool
    sector_size: int | None  # None: an empty/unpartitioned file, taken from the image
    size: int

    @property
    def kind(self) -> str:
        return "disk image file" if self.is_file else "block device"


@dataclass
class Plan:
    """What `execute` will do; also what --dry-run prints."""

    cfg: InstallConfig
    profile: Profile
    target: Target
    source: ImageSource
    needs_signature: bool
    edits: BootEdits
    filters: list[Filter]


# ---- preparation: no writes --------------------------------------------------------


def _ignition(cfg: InstallConfig) -> bytes | None:
    if cfg.ignition_file is not None:
        return read_ignition_file(Path(cfg.ignition_file))
    if cfg.ignition_url is None:
        return None
    url = cfg.ignition_url
    check_ignition_url(url, has_hash=cfg.ignition_hash is not None, insecure=cfg.insecure_ignition)
    from ..net.http import fetch_bytes

    try:
        # HTTPS-or-hash holds for where a redirect chain ends, not only where it starts.
        def final_ok(final: str) -> None:
            check_ignition_url(
                final, has_hash=cfg.ignition_hash is not None, insecure=cfg.insecure_ignition
            )

        resp, data = fetch_bytes(url, retries=cfg.retries, on_final=final_ok)
        with contextlib.closing(resp):
            if resp.status != 200:
                raise NestosError(f"fetching '{url}'") from NestosError(
                    f"{resp.status} {resp.reason}".strip()
                )
    except NestosError as exc:
        raise NestosError(f"downloading source Ignition config {url}") from exc
    check_json(data)
    return data


def inspect_target(path: str) -> Target:
    """Block device or regular file; its sector size and size (read-only probing)."""
    from ..disk import blockdev
    from ..disk.gpt import sniff_sector_size

    canonical = os.path.realpath(path)
    try:
        st = os.stat(canonical)
    except OSError as exc:
        raise NestosError(f"opening {path}") from exc
    if stat.S_ISBLK(st.st_mode):
        try:
            fd = os.open(canonical, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NestosError(f"opening {path}") from exc
        try:
            try:
                ss = blockdev.sector_size(fd)
            except (OSError, NestosError) as exc:
                raise NestosError(f"getting sector size of {path}") from exc
            size = blockdev.device_size(fd)
        finally:
            os.close(fd)
        return Target(path, canonical, False, ss, size)
    if stat.S_ISREG(st.st_mode):
        try:
            with open(canonical, "rb") as f:
                head = f.read(MiB)
        except OSError as exc:
            raise NestosError(f"opening {path}") from exc
        return Target(path, canonical, True, sniff_sector_size(head), st.st_size)
    raise NestosError(f'"{path}" is not a block device')


def _identity(st: os.stat_result) -> tuple[str, int, int]:
    """What a path really is: a block device by number, a file by device and inode."""
    if stat.S_ISBLK(st.st_mode):
        return ("blk", st.st_rdev, 0)
    return ("file", st.st_dev, st.st_ino)


def _loop_backing_files(devno: int) -> list[str]:
    """Backing files of a loop device and of the loop devices under a partition."""
    try:
        base = Path(f"/sys/dev/block/{os.major(devno)}:{os.minor(devno)}").resolve(strict=True)
    except OSError:
        return []
    out = []
    for p in (base / "loop" / "backing_file", base.parent / "loop" / "backing_file"):
        try:
            out.append(p.read_text().strip().removesuffix(" (deleted)"))
        except OSError:
            continue
    return [f for f in out if f]


def _identities(path: str) -> set[tuple[str, int, int]]:
    """The path's identity, plus its loop backing files' when it is a loop device."""
    st = os.stat(path)
    out = {_identity(st)}
    if stat.S_ISBLK(st.st_mode):
        for backing in _loop_backing_files(st.st_rdev):
            with contextlib.suppress(OSError):
                out.add(_identity(os.stat(backing)))
    return out


def refuse_source_is_target(image: str, target: Target) -> None:
    """Writing an image onto itself destroys it half-way: the same file (by inode, so
    symlinks and hard links count), the same block device, or a loop device backed by
    the other one."""
    try:
        src = _identities(image)
    except OSError:
        return  # the source's own open reports this with its usual message
    if src & _identities(target.canonical):
        raise NestosError(
            f"refusing to install {image} onto {target.path}: the image is the destination"
        )


def _stream_format(target: Target) -> str:
    ss = target.sector_size or 512
    if ss == 4096:
        return "4k.raw.xz"
    if ss != 512:
        say(f"Found non-standard sector size {ss} for {target.path}, assuming 512b-compatible")
    return "raw.xz"


def _find_osmet(cfg: InstallConfig, target: Target) -> ImageSource | None:
    from ..osmet.source import DEFAULT_REPO, default_dirs, find_osmet

    dirs = [Path(d) for d in cfg.osmet_dir] or default_dirs()
    repo = Path(cfg.ostree_repo) if cfg.ostree_repo else DEFAULT_REPO
    return find_osmet(cfg.effective_architecture, target.sector_size or 512, dirs, repo)


def resolve_source(
    cfg: InstallConfig, target: Target, profile: Profile
) -> tuple[ImageSource, bool]:
    """The image source (docs/compat.md#image-source) and whether a signature is expected."""
    from .. import sources

    retries = cfg.retries
    if cfg.image_file is not None:
        return sources.FileSource(cfg.image_file), True
    if cfg.image_url is not None:
        return sources.UrlSource(cfg.image_url, retries), True
    if cfg.offline:
        osmet = _find_osmet(cfg, target)
        if osmet is None:
            raise NestosError("cannot perform offline install; metadata missing")
        return osmet, False
    if cfg.stream is None:
        osmet = _find_osmet(cfg, target)
        if osmet is not None:
            return osmet, False
    found = sources.stream_sources(
        cfg.stream or profile.default_stream,
        cfg.effective_architecture,
        "metal",
        _stream_format(target),
        cfg.stream_base_url,
        retries,
        profile=profile,
    )
    if not found:
        raise NestosError("no artifacts found")
    if len(found) > 1:
        raise NestosError("found multiple artifacts")
    return found[0], True


def _check_can_edit_boot(target: Target, edits: BootEdits) -> None:
    """/boot edits mount the boot partition (through a loop device for an image file):
    both need root. Without it, say so now rather than after the image was written
    (and then wiped again)."""
    if not edits.needed() or os.geteuid() == 0:
        return
    what = "; ".join(edits.describe())
    where = "attach the image file to a loop device and mount" if target.is_file else "mount"
    raise NestosError(
        f"editing /boot of {target.path} needs root ({what}): it would {where} its boot "
        "partition. Run as root, or leave out the options that edit /boot"
    )


def prepare(cfg: InstallConfig, profile: Profile = NESTOS) -> Plan:
    """docs/compat.md#install-validation validation, in upstream's order; writes nothing."""
    from ..disk.saved import parse_partition_filters

    check_conflicts(cfg, "validating arguments")
    if cfg.fetch_timeout is not None:
        from ..net.http import set_fetch_timeout

        set_fetch_timeout(cfg.fetch_timeout)
    if not cfg.dest_device:
        raise NestosError("destination device must be specified")
    if cfg.secure_ipl and default_architecture() != "s390x":
        raise NestosError("Secure IPL is not supported")
    ignition = _ignition(cfg)
    network_dir: str | None = None
    if cfg.copy_network:
        network_dir = cfg.network_dir
        if not os.path.isdir(network_dir):
            raise NestosError(f"reading directory {network_dir}") from FileNotFoundError(
                2, "No such file or directory"
            )
    edits = BootEdits.build(
        ignition=ignition,
        ignition_hash=cfg.ignition_hash,
        platform=cfg.platform,
        consoles=cfg.console,
        firstboot_args=cfg.firstboot_args,
        append_karg=cfg.append_karg,
        delete_karg=cfg.delete_karg,
        network_dir=network_dir,
    )
    # Upstream checks the digest while editing /boot, after the disk was overwritten;
    # a mismatch is known now, so refuse before touching anything.
    edits.check_ignition_hash()
    filters = parse_partition_filters(list(cfg.save_partlabel), list(cfg.save_partindex))
    for keyring in cfg.keyring:  # unreadable or endless keyrings fail now, not mid-write
        read_limited(keyring, KEYRING_LIMIT, message=f"reading keyring {keyring}")
    target = inspect_target(cfg.dest_device)
    if cfg.image_file is not None:
        refuse_source_is_target(cfg.image_file, target)
    _check_can_edit_boot(target, edits)
    source, needs_sig = resolve_source(cfg, target, profile)
    return Plan(cfg, profile, target, source, needs_sig, edits, filters)


# ---- dry run -----------------------------------------------------------------------


def describe_plan(plan: Plan) -> str:
    """The --dry-run report (stdout)."""
    from ..disk.saved import SavedPartitions

    t = plan.target
    lines = ["Dry run: nothing will be written."]
    lines.append("Source: " + plan.source.description.replace("\n", "; "))
    if plan.needs_signature:
        sig = plan.source.signature()
        if sig is not None and plan.cfg.insecure:
            lines.append("Signature: found; not verified (--insecure)")
        elif sig is not None:
            from ..keydirs import require_trusted_keys

            require_trusted_keys(plan.profile, plan.cfg.keyring)
            lines.append("Signature: found; verified while writing, before the first MiB")
        elif plan.cfg.insecure:
            lines.append("Signature: not found; not verified (--insecure)")
        else:
            raise NestosError("--insecure not specified and signature not found")
    else:
        lines.append("Signature: not needed (image rebuilt from the live system)")
    ss = f"{t.sector_size}-byte sectors" if t.sector_size else "sector size of the image"
    lines.append(f"Destination: {t.path} ({t.kind}, {ss}, {t.size} bytes)")
    keep = "none"
    if plan.filters:
        with _open_target(t, os.O_RDONLY) as fd:
            saved = SavedPartitions.read(fd, t.sector_size or 512, t.size, plan.filters)
        if saved.entries:
            keep = ", ".join(f'{p.number} ("{p.name}")' for p in saved.entries)
    lines.append(f"Partitions kept: {keep}")
    edits = plan.edits.describe()
    lines.append("/boot edits: " + ("none" if not edits else ""))
    lines.extend(f"  - {e}" for e in edits)
    return "\n".join(lines) + "\n"


# ---- execution ---------------------------------------------------------------------


@contextlib.contextmanager
def _open_target(target: Target, flags: int) -> Iterator[int]:
    try:
        fd = os.open(target.canonical, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise NestosError(f"opening {target.path}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def install(cfg: InstallConfig, *, profile: Profile = NESTOS) -> None:
    """Install the image described by `cfg` (or print the plan with dry_run)."""
    plan = prepare(cfg, profile)
    if cfg.dry_run:
        sys.stdout.write(describe_plan(plan))
        sys.stdout.flush()
        return
    execute(plan)


def execute(plan: Plan) -> None:
    from .. import sources
    from ..disk import blockdev
    from ..disk.saved import SavedPartitions

    cfg, target = plan.cfg, plan.target
    say(plan.source.description)
    progress = Progress(plan.source.artifact_type, plan.source.length)
    reader: ImageReader
    if plan.needs_signature:
        # Signature lookup and the source's first request happen before the disk is
        # touched in any way (even the exclusivity probe re-reads its table).
        reader = sources.open_verified(
            plan.source,
            insecure=cfg.insecure,
            keyrings=[Path(k) for k in cfg.keyring],
            progress=progress,
            profile=plan.profile,
        )
    else:
        reader = _Counting(plan.source.open(), progress)

    with contextlib.ExitStack() as stack:
        stack.callback(reader.close)
        if not target.is_file:
            with context(f"checking for exclusive access to {target.path}"):
                blockdev.check_exclusive(target.canonical)
        fd = stack.enter_context(_open_target(target, os.O_RDWR))
        scan: OtherDisksScan | None = None

        def start_scan() -> None:
            nonlocal scan
            scan = _start_duplicate_boot_scan(target)

        ss_for_table = target.sector_size or 512
        saved = SavedPartitions.read(fd, ss_for_table, target.size, plan.filters)
        sector_size = ss_for_table
        try:
            result = write_image(
                reader,
                fd,
                # An empty image file has no room for a placeholder table: zeros instead.
                saved=saved if target.size else None,
                expected_sector_size=target.sector_size,
                finish=reader.finish,
                size_limit=target.size or None,
                size_limit_message=f"image is larger than {target.path} ({target.size} bytes)",
                copying=start_scan,
            )
            sector_size = target.sector_size or result.sector_size or 512
            _customize(plan, fd, sector_size)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise NestosError("syncing data to disk") from exc
        except (Exception, KeyboardInterrupt) as exc:
            _fail(plan, fd, saved, exc, sector_size)
            raise NestosError("install failed") from None
    _check_duplicate_boot(target, scan)
    say("Install complete.")


class _Counting:
    """Progress for sources that need no verification (osmet); an ImageReader."""

    def __init__(self, raw: SourceStream, progress: Progress) -> None:
        self._raw = raw
        self._progress = progress
        self._closed = False

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self._progress.add(len(data))
        return data

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        self._progress.finish()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._raw.close()


def _customize(plan: Plan, fd: int, sector_size: int) -> None:
    """Re-read the table, then edit /boot when anything was asked for."""
    from ..disk import blockdev
    from ..disk.gpt import GPT

    target = plan.target
    size = os.fstat(fd).st_size if target.is_file else target.size
    try:
        gpt: GPT | None = GPT.read(fd, sector_size, size)
    except FormatError:
        gpt = None  # not a GPT image: nothing for us to add nodes for
    if not target.is_file:
        blockdev.reread_partitions(target.canonical, gpt)
    if not plan.edits.needed():
        return
    if target.is_file:
        with blockdev.attached(target.canonical, sector_size) as dev:
            _edit_boot(dev, plan)
    else:
        _edit_boot(target.canonical, plan)


def _enter_private_mount_namespace() -> None:
    """Mount /boot where only we can see it (upstream: unshare(CLONE_NEWNS)).

    Nobody else (udisks, a desktop automounter) gets to see or hold the mount, and a
    crash cannot leave it behind. Best effort: without the privilege (containers) we
    mount in the current namespace.
    """
    from ..disk.mount import enter_private_mount_namespace

    with contextlib.suppress(NestosError):
        enter_private_mount_namespace()


def _edit_boot(dev: str, plan: Plan) -> None:
    from ..disk import blockdev
    from ..disk.mount import mount_private

    part = blockdev.find_partition_by_label(dev, BOOT_LABEL)
    assert part.fstype is not None
    _enter_private_mount_namespace()
    with mount_private(part.path, part.fstype) as boot:
        apply(boot, plan.edits, plan.profile)


def _fail(
    plan: Plan, fd: int, saved: SavedPartitions, exc: BaseException, sector_size: int
) -> None:
    """docs/compat.md#wipe-on-error: report, then wipe (or preserve) the partition table."""
    from ..disk import blockdev
    from ..disk.saved import wipe_partition_table

    write("\n" + format_chain(exc) + "\n\n")
    target = plan.target
    if plan.cfg.preserve_on_error:
        say("Preserving partition table as requested")
        if saved.entries:
            path = saved.stash()
            say(f"Storing saved partition entries to {path}")
        return
    say("Resetting partition table")
    if target.is_file and target.size == 0:
        # The file was empty: give it back empty.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        return
    try:
        # A second Ctrl-C (or systemd's SIGTERM) must not cut the reset short.
        with signals_deferred():
            size = os.fstat(fd).st_size if target.is_file else target.size
            wipe_partition_table(fd, sector_size, size, saved)
            os.fsync(fd)
            if not target.is_file:
                blockdev.reread_partitions(target.canonical)
    except Exception as wipe_exc:
        err = NestosError("resetting partition table")
        err.__cause__ = wipe_exc
        write(format_chain(err) + "\n")


# ---- docs/compat.md#after-install duplicate boot filesystems -------------------------------------


def _on_target(dev: str, target: str) -> bool:
    if dev == target:
        return True
    rest = dev[len(target) :] if dev.startswith(target) else None
    return rest is not None and re.fullmatch(r"p?\d+", rest) is not None


def _start_duplicate_boot_scan(target: Target) -> OtherDisksScan | None:
    """Probe the other disks while the image is written (blockdev.OtherDisksScan), when
    the check will need blkid at all: with udevd running its database answers."""
    from ..disk import blockdev, udev

    if udev.udevd_running():
        return None
    if target.is_file:
        return blockdev.OtherDisksScan(lambda dev: False)
    return blockdev.OtherDisksScan(lambda dev: _on_target(dev, target.canonical))


def _check_duplicate_boot(target: Target, scan: OtherDisksScan | None = None) -> None:
    """Best effort: other filesystems labeled `boot` confuse the first boot.

    Unlike upstream we do not re-read other disks' partition tables: on kernels without
    a partition parser (containers, minimal VMs) that would drop their partition nodes.
    """
    try:
        others = _boot_filesystems(target, scan)
    except Exception as exc:
        say(f"checking filesystems labeled 'boot': {exc}")
        return
    if not others:
        return
    from ..disk.blockdev import duplicate_label_note

    write(duplicate_label_note(others, BOOT_LABEL))


def _boot_filesystems(target: Target, scan: OtherDisksScan | None) -> list[str]:
    from ..disk import blockdev

    candidates = None
    if scan is not None:
        own = [] if target.is_file else blockdev.kernel_partitions(target.canonical)
        candidates = scan.candidates([p.path for p in own])
    return [
        fs["NAME"]
        for fs in blockdev.filesystems_with_label(BOOT_LABEL, candidates=candidates)
        if target.is_file or not _on_target(fs["NAME"], target.canonical)
    ]
