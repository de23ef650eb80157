"""Units, generator and `make install` layout, checked with the real systemd tools.

No systemd runs here, but `systemd-analyze verify --root` and `systemctl --root`
work offline on a scratch root that holds the host's stock units, the few executables
our units name, and our files as `make install DESTDIR=` lays them out.
"""

from __future__ import annotations

import os
import re
import shlex
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
GENERATOR = REPO / "units/nestos-installer-generator"
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


def generator_run(
    tmp_path: Path,
    cmdline: str,
    *,
    initrd: bool = False,
    config: dict[str, str] | None = None,
    live_marker: bool = False,
    marker: Path | None = None,
) -> tuple[list[str], dict[str, str], Path, Path, Path]:
    """argv and env that run the real generator on a fake command line, config dirs
    and skip_reboot marker path; also the normal and early output dirs and the marker."""
    cmd_file = tmp_path / "cmdline"
    cmd_file.write_text(cmdline + "\n")
    conf = tmp_path / "installer.d"
    conf.mkdir(exist_ok=True)
    for name, text in (config or {}).items():
        (conf / name).write_text(text)
    out, early, late = (tmp_path / n for n in ("normal", "early", "late"))
    marker = marker or tmp_path / "run" / "nestos-installer-noreboot"
    (tmp_path / "live").touch()
    env = dict(os.environ)
    env.update(
        NESTOS_INSTALLER_CMDLINE=str(cmd_file),
        NESTOS_INSTALLER_CONFIG_DIRS=f"{conf} {tmp_path / 'absent.d'}",
        NESTOS_INSTALLER_NOREBOOT_FLAG=str(marker),
        NESTOS_INSTALLER_INITRD="1" if initrd else "0",
        NESTOS_INSTALLER_LIVE_MARKERS=str(tmp_path / ("live" if live_marker else "absent")),
        NESTOS_INSTALLER_GENERATOR_STDIO="1",
    )
    argv = [str(GENERATOR), str(out), str(early), str(late)]
    return argv, env, out, early, marker


def generator(
    tmp_path: Path,
    cmdline: str,
    *,
    initrd: bool = False,
    config: dict[str, str] | None = None,
    live_marker: bool = False,
) -> tuple[Path, Path, Path]:
    """Run the real generator (see generator_run); it must succeed silently."""
    argv, env, out, early, marker = generator_run(
        tmp_path, cmdline, initrd=initrd, config=config, live_marker=live_marker
    )
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == proc.stderr == b""
    return out, early, marker


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
    """Rebooting is the default: the generator writes nothing but the boot goal."""
    out, early, marker = generator(tmp_path, cmdline)
    assert os.readlink(out / "default.target") == POST
    assert not marker.exists() and not marker.parent.exists()
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
    out, _, marker = generator(tmp_path, cmdline)
    assert os.readlink(out / "default.target") == POST
    assert marker.is_file()


@pytest.mark.parametrize(
    "cmdline",
    [
        "quiet",
        "nestos.inst.install_dev=",
        "nestos.inst=yes",
        "nestos.inst.install_devx=/dev/vda",
        "coreos.inst.install_dev=/dev/sda nestos.inst.install_dev=",  # nestos. wins
        "nestos.inst.install_dev=/dev/sda nestos.inst.install_dev=",  # last wins
        "nestos.inst.skip_reboot",
    ],
)
def test_generator_does_nothing_without_a_reason(tmp_path: Path, cmdline: str) -> None:
    out, early, marker = generator(tmp_path, cmdline)
    assert not out.exists() and not early.exists() and not marker.exists()


def test_generator_non_empty_installer_d(tmp_path: Path) -> None:
    out, _, marker = generator(
        tmp_path, "quiet", config={"0000-customize.yaml": "dest-device: /dev/vda\n"}
    )
    assert os.readlink(out / "default.target") == POST
    assert not marker.exists()


def test_generator_in_initrd_aliases_initrd_target(tmp_path: Path) -> None:
    out, early, marker = generator(
        tmp_path, "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot", initrd=True
    )
    assert os.readlink(early / "initrd.target") == POST
    assert not (out / "default.target").exists()
    assert marker.is_file()


@pytest.mark.parametrize(
    ("cmdline", "live"),
    [
        ("nestos.inst.install_dev=/dev/vda root=/dev/sda4", False),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot root=/dev/sda4", False),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot", True),
    ],
)
def test_generator_leaves_installing_to_the_real_root(
    tmp_path: Path, cmdline: str, live: bool
) -> None:
    """A live or root= initramfs switches root first; the live root's run installs
    (and writes the skip_reboot marker there, not here)."""
    out, early, marker = generator(tmp_path, cmdline, initrd=True, live_marker=live)
    assert not out.exists() and not early.exists() and not marker.exists()


def test_generator_without_a_writable_marker_does_not_install(tmp_path: Path) -> None:
    """skip_reboot whose marker cannot be created: no boot goal (no install), rather
    than an install that would reboot. The marker's parent is a regular file, so
    this fails for root too."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    argv, env, out, early, marker = generator_run(
        tmp_path,
        "nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot",
        marker=blocker / "nestos-installer-noreboot",
    )
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert proc.returncode == 1
    assert proc.stdout.decode() == (
        f"nestos-installer-generator: cannot create {marker} (skip_reboot); not installing\n"
    )
    assert not out.exists() and not early.exists()
    assert blocker.read_text() == ""


# What the units do with the generator's result: exactly one of the three end units
# runs. The skip_reboot marker is the only thing the units look at besides the karg.
END_UNITS = {
    "reboot": "nestos-installer-reboot.service",
    "secure-ipl": "nestos-installer-secure-ipl-reboot.service",
    "shell": "nestos-installer-noreboot.service",
}


def _changes(trace: str) -> list[str]:
    """Paths that the traced processes created, in the order they did it.

    Reads `strace -f -e status=successful` output of the calls that can create a
    file, directory or link; an open counts only when it may create (O_CREAT)."""
    paths = []
    for line in trace.splitlines():
        # The shell waits for each child, so no two calls interleave; a split record
        # would hide a change from the parser below.
        assert "unfinished" not in line and "resumed" not in line, line
        m = re.match(r"\d+\s+(\w+)\((.*)\)\s+= \d", line)
        if m is None:
            continue
        call, args = m.groups()
        if call in ("open", "openat", "openat2") and "O_CREAT" not in args:
            continue
        # symlink[at](TARGET, [dirfd,] LINKPATH): the created path is the last string.
        created = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
        assert created, line
        paths.append(created[-1] if call.startswith(("symlink", "link", "rename")) else created[0])
    return paths


def _outcome(done: list[str], goal: Path, marker: Path) -> str:
    """What a boot does after the generator made exactly these changes."""
    if str(goal) not in done:
        return "no install"
    return "shell" if str(marker) in done else "reboot"


@pytest.mark.parametrize(
    ("cmdline", "initrd", "live", "expected"),
    [
        ("nestos.inst.install_dev=/dev/vda", False, False, "reboot"),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot", False, False, "shell"),
        ("coreos.inst.install_dev=/dev/vda coreos.inst.skip_reboot=1", True, False, "shell"),
        ("nestos.inst.install_dev=/dev/vda", True, False, "reboot"),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot", True, True, "no install"),
        ("quiet nestos.inst.skip_reboot", False, False, "no install"),
    ],
)
def test_generator_killed_anywhere_boots_consistently(
    tmp_path: Path, cmdline: str, initrd: bool, live: bool, expected: str
) -> None:
    """systemd kills a generator that overruns its time limit (a loaded machine can
    hit it); the boot must then either not install or end as the command line says.

    The generator runs its commands one after another, so whatever point it is killed
    at (a child such as `ln` may still finish), what it has created is a prefix of
    the changes a full run makes. strace records that sequence from a real run; every
    prefix is checked. Outside the test's directory only /dev/null (a redirection)
    may be opened for writing (`mkdir -p` creates components by relative names)."""
    _need("strace")
    argv, env, out, early, marker = generator_run(
        tmp_path, cmdline, initrd=initrd, live_marker=live
    )
    trace = tmp_path / "trace"
    calls = "open,openat,creat,mkdir,mkdirat,symlink,symlinkat,link,linkat"
    calls += ",rename,renameat,renameat2"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-s", "4096", "-e", f"trace={calls}",
         "-e", "status=successful", "-o", str(trace), *argv],
        env=env,
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    changes = _changes(trace.read_text())
    outside = {p for p in changes if p.startswith("/") and not p.startswith(f"{tmp_path}/")}
    assert outside <= {"/dev/null"}
    goal = early / "initrd.target" if initrd else out / "default.target"
    assert _outcome(changes, goal, marker) == expected
    for k in range(len(changes) + 1):
        assert _outcome(changes[:k], goal, marker) in ("no install", expected), changes[:k]


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("nestos.inst.install_dev=/dev/vda", "reboot"),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.skip_reboot", "shell"),
        ("coreos.inst.install_dev=/dev/vda coreos.inst.secure_ipl", "secure-ipl"),
        ("nestos.inst.install_dev=/dev/vda nestos.inst.secure_ipl=0", "secure-ipl"),
        (
            "nestos.inst.install_dev=/dev/vda nestos.inst.secure_ipl nestos.inst.skip_reboot",
            "shell",
        ),
    ],
)
def test_exactly_one_end_unit_runs(tmp_path: Path, cmdline: str, expected: str) -> None:
    """The generator with its default marker path, then systemd itself evaluating the
    end units' Condition lines (`systemd-analyze condition`): exactly one passes.

    ConditionPathExists= has no --root, so this runs in a private mount namespace
    whose /run is an empty tmpfs (root only); the kernel command line reaches
    systemd through its SYSTEMD_PROC_CMDLINE override, the generator through its
    own test hook. `secure_ipl=0` still picks the secure-IPL unit, as upstream."""
    _need("systemd-analyze")
    _need("unshare")
    if os.geteuid() != 0:
        pytest.skip("needs root for a private /run")
    argv, env, out, _, _ = generator_run(tmp_path, cmdline)
    del env["NESTOS_INSTALLER_NOREBOOT_FLAG"]
    env["SYSTEMD_PROC_CMDLINE"] = cmdline
    lines = ["set -e", "mount -t tmpfs -o mode=0755 nestos-test-run /run", shlex.join(argv)]
    for name, unit in END_UNITS.items():
        conds = [c for c in (REPO / "units" / unit).read_text().splitlines()
                 if c.startswith("Condition")]  # fmt: skip
        assert conds, unit
        lines.append(
            f"if systemd-analyze condition {shlex.join(conds)} >/dev/null 2>&1;"
            f" then echo {name}; fi"
        )
    script = tmp_path / "ns.sh"
    script.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", str(script)],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == [expected]
    assert os.readlink(out / "default.target") == POST


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
