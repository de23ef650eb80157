"""The install service (docs/compat.md#service-flow) without building an argv.

installer.d files (in name order, CoreOS dir first so NestOS files override it) and
then the kernel command line are merged by the install helper's `merge_layers`, so
kargs override files exactly as upstream's argument order made them. On success the
installer.d directories are removed so a persisted live system cannot loop.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NestosError, format_chain
from ..profile import ALL, COREOS, NESTOS, Profile
from .cmdline import Cmdline, KargConfig, parse_kargs
from .journal import JournalReporter

if TYPE_CHECKING:
    from ..install.config import InstallConfig

DEVICE_WAIT_SECONDS = 120.0


def default_config_dirs() -> list[Path]:
    """Lowest precedence first: the CoreOS-compat dir, then the NestOS one."""
    return [Path(p.installer_config_dir) for p in reversed(ALL)]


def config_files(dirs: Sequence[Path]) -> list[Path]:
    """Regular files of each directory, sorted by name (like upstream's shell glob)."""
    files: list[Path] = []
    for d in dirs:
        try:
            entries = sorted(d.iterdir(), key=lambda p: p.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise NestosError(f"reading {d}") from e
        # Like the shell glob `*`: dot files (editor leftovers) are not config.
        files += [p for p in entries if p.is_file() and not p.name.startswith(".")]
    return files


def choose_profile(kargs: KargConfig, files: Sequence[Path]) -> Profile:
    """CoreOS naming only when nothing NestOS-specific asked for the install."""
    if NESTOS in kargs.profiles_seen:
        return NESTOS
    if COREOS in kargs.profiles_seen:
        return COREOS
    if files and all(str(f).startswith(COREOS.installer_config_dir + "/") for f in files):
        return COREOS
    return NESTOS


def build_config(kargs: KargConfig, files: Sequence[Path]) -> InstallConfig:
    """Files then kargs → InstallConfig; errors name the file/key or the karg."""
    from ..install.config import ArgumentLayer, load_config_file, merge_layers, validate_layer

    layers: list[Mapping[str, Any]] = [load_config_file(f) for f in files]
    origins = [f"config file {f}" for f in files]
    # Validate kargs one by one first so an error names the exact karg.
    for key, value in kargs.layer.items():
        validate_layer(ArgumentLayer({key: value}), f'kernel argument "{kargs.sources[key]}"')
    layers.append(ArgumentLayer(kargs.layer))
    origins.append("kernel command line")
    return merge_layers(layers, origins)


def _describe_image(cfg: InstallConfig) -> str | None:
    if cfg.image_file or cfg.image_url:
        return cfg.image_file or cfg.image_url
    return f"stream {cfg.stream}" if cfg.stream else None


def wait_for_device(dev: str, timeout: float = DEVICE_WAIT_SECONDS) -> None:
    """Let udev finish, then give slow controllers time to show the disk.

    With udevd running this sleeps on udev's block events; without it, it polls
    (disk/udev.py). Either way a disk that never shows up is left for install to
    report with its own message.
    """
    from ..disk import blockdev, udev

    blockdev.settle()
    if Path(dev).exists():
        return
    print(f"Waiting for {dev} to appear...", flush=True)
    udev.wait_for_node(dev, timeout)


def run_service(
    *,
    cmdline_file: str | Path = "/proc/cmdline",
    dirs: Sequence[Path] | None = None,
    device_timeout: float = DEVICE_WAIT_SECONDS,
) -> None:
    """Run one unattended install; raises NestosError on any failure.

    Every failure, including a bad karg or config file, also becomes a `failed`
    journal record, so `journalctl -u nestos-installer` always says why.
    """
    dirs = default_config_dirs() if dirs is None else list(dirs)
    reporter = JournalReporter()
    with reporter:
        try:
            _run(reporter, cmdline_file, dirs, device_timeout)
        except BaseException as e:
            text = format_chain(e) if isinstance(e, NestosError) else repr(e)
            # `install failed` is raised after the disk was reset, with the error that
            # caused it hidden (`from None`: the CLI printed it already). The journal
            # record is read on its own, so it names that error too.
            cause = e.__context__ if e.__suppress_context__ else None
            if isinstance(cause, NestosError):
                text += "\n" + format_chain(cause)
            elif isinstance(cause, OSError) and cause.strerror:
                text += f"\nError: {cause.strerror}"
            reporter.stage("failed", f"Install failed: {text}", priority=3)
            raise
        reporter.stage("complete", "Install complete.")
    for d in dirs:
        if d.is_symlink():
            d.unlink(missing_ok=True)
        elif d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _run(
    reporter: JournalReporter, cmdline_file: str | Path, dirs: Sequence[Path], timeout: float
) -> None:
    from ..install.main import install

    kargs = parse_kargs(Cmdline.read(cmdline_file))
    for warning in kargs.warnings:
        print(warning, flush=True)
    files = config_files(dirs)
    if kargs.install_dev is None and not files:
        raise NestosError("No install device specified.")
    cfg = build_config(kargs, files)
    profile = choose_profile(kargs, files)
    reporter.device = cfg.dest_device
    reporter.image = _describe_image(cfg)
    sources = [str(f) for f in files] + ["kernel command line"]
    print(f"nestos-installer install (from {', '.join(sources)})", flush=True)
    print("Running with arguments: " + " ".join(cfg.to_args()), flush=True)
    if cfg.dest_device:
        wait_for_device(cfg.dest_device, timeout)
    reporter.stage("start", f"Installing to {cfg.dest_device or '(no device)'}")
    install(cfg, profile=profile)
