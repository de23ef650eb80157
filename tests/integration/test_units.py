"""Units, generator and `make install` layout, checked with the real systemd tools.

No systemd runs here, but `systemd-analyze verify --root` and `systemctl --root`
work offline on a scratch root that holds the host's stock units, the few executables
our units name, and our files as `make install DESTDIR=` lays them out.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import REPO

UNITS = (
    "nestos-installer.service",
    "nestos-installer.target",
    "nestos-installer-pre.target",
    "nestos-installer-post.target",
    "nestos-installer-reboot.service",
    "nestos-installer-noreboot.service",
    "nestos-installer-secure-ipl-reboot.service",
    "nestos-installer-disable-device-auto-activation.service",
)
POST = "/usr/lib/systemd/system/nestos-installer-post.target"
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
    None,
)


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install DESTDIR=...` of this checkout."""
    dest = tmp_path_factory.mktemp("stage")
    # The environment running the tests must survive a staged install of the package.
    script = Path(sys.executable).parent / "nestos-installer"
    before = script.exists()
    proc = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr", f"PYTHON={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert script.exists() == before, "make install DESTDIR=... uninstalled the venv's copy"
    return dest


@pytest.fixture
def sysroot(tmp_path: Path, staged: Path) -> Iterator[Path]:
    """Scratch root: stock units + executables the units name + our staged files."""
    _need("systemd-analyze")
    if HOST_UNITS is None:
        pytest.skip("no systemd unit directory on this host")
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for d in ("usr/bin", "usr/sbin", "etc/systemd/system"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    for exe in ("/usr/bin/systemctl", "/bin/echo", "/usr/sbin/sulogin", "/bin/sh"):
        found = shutil.which(Path(exe).name) or exe
        dest = root / exe.lstrip("/")
        if not dest.exists():
            shutil.copy2(found, dest)
    shutil.copytree(staged / "usr", root / "usr", dirs_exist_ok=True, symlinks=True)
    yield root


def test_make_install_layout(staged: Path) -> None:
    for unit in UNITS:
        path = staged / "usr/lib/systemd/system" / unit
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, unit
    executables = (
        "usr/lib/systemd/system-generators/nestos-installer-generator",
        "usr/libexec/nestos-installer-service",
        "usr/libexec/nestos-installer-disable-device-auto-activation",
        "usr/lib/dracut/modules.d/50nestos-installer/module-setup.sh",
        "usr/bin/nestos-installer",
    )
    for rel in executables:
        assert os.access(staged / rel, os.X_OK), rel
    assert (staged / "usr/share/doc/nestos-installer/service-mode.md").is_file()
    assert list(staged.glob("usr/lib/python3*/*-packages/nestos_inst/service/main.py"))


def test_systemd_analyze_verify_is_silent(sysroot: Path) -> None:
    unit_dir = sysroot / "usr/lib/systemd/system"
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={sysroot}", *UNITS],
        cwd=unit_dir,
        capture_output=True,
        check=False,
    )
    assert proc.stderr.decode() == ""
    assert proc.returncode == 0


def test_installer_status_reaches_systemctl(staged: Path) -> None:
    """A Type=oneshot service gets no sd_notify STATUS= unless NotifyAccess= allows it;
    the VM journal scenario (tests/e2e) reads `systemctl status` back for real."""
    unit = (staged / "usr/lib/systemd/system/nestos-installer.service").read_text()
    service = unit.split("[Service]", 1)[1]
    assert "Type=oneshot" in service.splitlines()
    assert "NotifyAccess=main" in service.splitlines()


def test_verify_catches_a_broken_unit(sysroot: Path) -> None:
    """Guard against a verify setup that would pass anything."""
    unit = sysroot / "usr/lib/systemd/system/nestos-installer.service"
    unit.write_text(unit.read_text().replace("/usr/libexec/nestos-installer-service", "/no/x"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={sysroot}", "nestos-installer.service"],
        cwd=unit.parent,
        capture_output=True,
        check=False,
    )
    assert b"/no/x" in proc.stderr


def test_hook_units_enable_into_the_flow(sysroot: Path) -> None:
    """Pre/post-install hooks attach with [Install] RequiredBy=nestos-installer.target."""
    _need("systemctl")
    hook = sysroot / "etc/systemd/system/site-post-install.service"
    hook.write_text(
        "[Unit]\nDescription=Site post-install hook\n"
        "After=nestos-installer.service\nBefore=nestos-installer.target\n\n"
        "[Service]\nType=oneshot\nExecStart=/bin/echo hook\n\n"
        "[Install]\nRequiredBy=nestos-installer.target\n"
    )
    proc = subprocess.run(
        ["systemctl", f"--root={sysroot}", "enable", "site-post-install.service"],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    link = sysroot / "etc/systemd/system/nestos-installer.target.requires/site-post-install.service"
    assert link.is_symlink()
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={sysroot}", "nestos-installer-post.target"],
        cwd=sysroot / "usr/lib/systemd/system",
        capture_output=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr.decode()) == (0, "")


# ---- the generator (the real executable, with a fake command line) -----------------


def generator(
    tmp_path: Path,
    cmdline: str,
    *,
    initrd: bool = False,
    config: dict[str, str] | None = None,
    live_marker: bool = False,
) -> tuple[Path, Path, Path]:
    """Run the real generator on a fake command line, config dirs and flag path."""
    cmd_file = tmp_path / "cmdline"
    cmd_file.write_text(cmdline + "\n")
    conf = tmp_path / "installer.d"
    conf.mkdir(exist_ok=True)
    for name, text in (config or {}).items():
        (conf / name).write_text(text)
    out, early, late = (tmp_path / n for n in ("normal", "early", "late"))
    flag = tmp_path / "run" / "nestos-installer-reboot"
    (tmp_path / "live").touch()
    env = dict(os.environ)
    env.update(
        NESTOS_INSTALLER_CMDLINE=str(cmd_file),
        NESTOS_INSTALLER_CONFIG_DIRS=f"{conf} {tmp_path / 'absent.d'}",
        NESTOS_INSTALLER_REBOOT_FLAG=str(flag),
        NESTOS_INSTALLER_INITRD="1" if initrd else "0",
        NESTOS_INSTALLER_LIVE_MARKERS=str(tmp_path / ("live" if live_marker else "absent")),
        NESTOS_INSTALLER_GENERATOR_STDIO="1",
    )
    proc = subprocess.run(
        [REPO / "units/nestos-installer-generator", out, early, late],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == proc.stderr == b""
    return out, early, flag


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet nestos.inst.install_dev=/dev/vda",
        "coreos.inst.install_dev=/dev/sda",
        "coreos.inst.install_dev=sda",
        "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot=0",
        "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot=off coreos.inst.skip_reboot",
        "nestos.inst.install_dev=* nestos.inst.skip_reboot=",
    ],
)
def test_generator_install_and_reboot(tmp_path: Path, cmdline: str) -> None:
    out, early, flag = generator(tmp_path, cmdline)
    assert os.readlink(out / "default.target") == POST
    assert flag.is_file()
    assert not early.exists()


@pytest.mark.parametrize(
    "cmdline",
    [
        "nestos.inst.install_dev=/dev/vda coreos.inst.skip_reboot",
        "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot=1",
        "coreos.inst.install_dev=/dev/vda nestos.inst.skip_reboot=0 nestos.inst.skip_reboot",
    ],
)
def test_generator_skip_reboot(tmp_path: Path, cmdline: str) -> None:
    out, _, flag = generator(tmp_path, cmdline)
    assert os.readlink(out / "default.target") == POST
    assert not flag.exists()


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet",
        "nestos.inst.install_dev=",
        "nestos.inst=yes",
        "nestos.inst.install_devx=/dev/vda",
        "coreos.inst.install_dev=/dev/sda nestos.inst.install_dev=",  # nestos. wins
        "nestos.inst.install_dev=/dev/sda nestos.inst.install_dev=",  # last wins
    ],
)
def test_generator_does_nothing_without_a_reason(tmp_path: Path, cmdline: str) -> None:
    out, early, flag = generator(tmp_path, cmdline)
    assert not out.exists() and not early.exists() and not flag.exists()


def test_generator_non_empty_installer_d(tmp_path: Path) -> None:
    out, _, flag = generator(
        tmp_path, "quiet", config={"0000-customize.yaml": "dest-device: /dev/vda\n"}
    )
    assert os.readlink(out / "default.target") == POST
    assert flag.is_file()


def test_generator_in_initrd_aliases_initrd_target(tmp_path: Path) -> None:
    out, early, flag = generator(tmp_path, "nestos.inst.install_dev=/dev/vda", initrd=True)
    assert os.readlink(early / "initrd.target") == POST
    assert not (out / "default.target").exists()
    assert flag.is_file()


@pytest.mark.parametrize(
    ("cmdline", "live"),
    [
        ("nestos.inst.install_dev=/dev/vda root=/dev/sda4", False),
        ("nestos.inst.install_dev=/dev/vda", True),
    ],
)
def test_generator_leaves_installing_to_the_real_root(
    tmp_path: Path, cmdline: str, live: bool
) -> None:
    """A live or root= initramfs switches root first; the live root's run installs."""
    out, early, flag = generator(tmp_path, cmdline, initrd=True, live_marker=live)
    assert not out.exists() and not early.exists() and not flag.exists()


def test_disable_device_auto_activation_is_idempotent(tmp_path: Path) -> None:
    script = REPO / "units/scripts/nestos-installer-disable-device-auto-activation"
    env = dict(os.environ, NESTOS_INSTALLER_ROOT=str(tmp_path))
    lvm = tmp_path / "etc/lvm/lvm.conf"
    lvm.parent.mkdir(parents=True)
    lvm.write_text("global {\n}\n")
    for _ in range(2):
        subprocess.run([script], env=env, check=True)
    md = (tmp_path / "etc/mdadm.conf.d/nestos-installer.conf").read_text()
    assert md.splitlines()[-1] == "AUTO -all"
    text = lvm.read_text()
    assert text.startswith("global {\n}\n")
    assert text.count('filter = [ "r|.*|" ]') == 1
