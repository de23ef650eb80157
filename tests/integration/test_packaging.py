"""Packaging: man pages, `make install` layouts (PREFIX), sdist, wheel and the RPM.

Everything is built for real from this checkout (make, setuptools, pip, rpmbuild) into
temporary directories; nothing is installed on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from nestos_inst.cli import build_registry
from nestos_inst.options import OPTIONS
from tests.helpers.cli import REPO, run_cli

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with setuptools/wheel/pip (as CI uses)


def _visible_pages() -> set[str]:
    reg = build_registry()
    hidden = [e.path for e in reg.entries if e.hidden]
    names = {"nestos-installer.8"}
    for e in reg.entries:
        if not any(e.path == h or e.path.startswith(h + " ") for h in hidden):
            names.add("nestos-installer-" + e.path.replace(" ", "-") + ".8")
    return names


def _make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, LC_ALL="C")
    env.pop("MAKEFLAGS", None)
    return subprocess.run(
        ["make", "-s", *args], cwd=cwd, capture_output=True, env=env, check=False, timeout=900
    )


def test_man_page_for_every_command(tmp_path: Path) -> None:
    proc = run_cli("pack", "man", "-C", tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    pages = {p.name for p in tmp_path.iterdir()}
    assert pages == _visible_pages()
    assert "nestos-installer-pack-man.8" not in pages  # hidden commands get none
    for page in sorted(tmp_path.iterdir()):
        # groff -ww: every warning; -z: no output. A clean page prints nothing.
        lint = subprocess.run(
            ["groff", "-man", "-ww", "-z", "-Tutf8", str(page)], capture_output=True, check=False
        )
        assert lint.returncode == 0 and lint.stderr == b"", (page.name, lint.stderr)
    # Rendered as plain ASCII text (no overstrike), as a pager would show it.
    text = subprocess.run(
        ["groff", "-man", "-Tascii", "-P", "-cbou", str(tmp_path / "nestos-installer-install.8")],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for opt in OPTIONS:
        if opt.cli and not opt.hidden and opt.kind != "positional":
            assert opt.flag in text, opt.flag


def test_command_reference_is_current() -> None:
    proc = run_cli("pack", "commands-reference")
    assert proc.returncode == 0
    current = (REPO / "docs" / "commands.md").read_text()
    assert current == proc.stdout.decode(), (
        "docs/commands.md is stale: nestos-installer pack commands-reference > docs/commands.md"
    )


@pytest.mark.parametrize("prefix", ["/usr", "/usr/local"])
def test_make_install_data_layout(tmp_path: Path, prefix: str) -> None:
    proc = _make(
        "install-data", f"DESTDIR={tmp_path}", f"PREFIX={prefix}", f"PYTHON={SYSTEM_PYTHON}"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    root = tmp_path / prefix.lstrip("/")
    man = root / "share/man/man8"
    assert {p.name for p in man.iterdir()} == _visible_pages()
    assert (root / "share/nestos-installer/keys.d").is_dir()
    assert (tmp_path / "etc/nestos-installer/keys.d").is_dir()
    example = (root / "share/nestos-installer/example-config.yaml").read_text()
    assert example == run_cli("pack", "example-config").stdout.decode()
    assert "# image-url:" in example
    # Units and generator name PREFIX's paths, never another prefix's.
    unit = (root / "lib/systemd/system/nestos-installer.service").read_text()
    assert f"ExecStart={prefix}/libexec/nestos-installer-service" in unit
    generator = (root / "lib/systemd/system-generators/nestos-installer-generator").read_text()
    assert f"{prefix}/lib/systemd/system/nestos-installer-post.target" in generator
    if prefix != "/usr":
        for path in (root / "lib/systemd").rglob("*"):
            if path.is_file():
                assert "/usr/libexec" not in path.read_text(), path
                assert "/usr/lib/systemd/system/" not in path.read_text(), path
        assert not (root / "lib/dracut").exists()
        assert "dracut module not installed" in proc.stdout.decode()
    else:
        assert (root / "lib/dracut/modules.d/50nestos-installer/module-setup.sh").is_file()


def test_sdist_carries_everything_a_distribution_builds_from(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c",
         f"from setuptools import build_meta as b; print(b.build_sdist({str(tmp_path)!r}))"],
        cwd=REPO, capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    name = proc.stdout.decode().split()[-1]
    with tarfile.open(tmp_path / name) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for needed in (
        "LICENSE", "Makefile", "README.md", "nestos-installer.spec",
        "packaging/rpm-debian.macros", "packaging/keys.d-README",
        "units/nestos-installer.service", "units/nestos-installer-generator",
        "units/scripts/nestos-installer-service",
        "dracut/50nestos-installer/module-setup.sh", "docs/service-mode.md",
        "docs/commands.md", "docs/coming-from-coreos-installer.md",
        "nestos_inst/data/keys/coreos/fedora-coreos-signing-keys.asc",
        "nestos_inst/data/keys/coreos/ORIGIN.md",
    ):  # fmt: skip
        assert needed in members, needed
    assert not [m for m in members if "__pycache__" in m]


def test_wheel_has_keys_and_license(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path), str(REPO)],
        capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nestos_inst/data/keys/coreos/fedora-coreos-signing-keys.asc" in names
    assert "nestos_installer-0.1.0.dist-info/LICENSE" in names
    assert "nestos_inst/cli/man.py" in names


@pytest.mark.slow
def test_make_rpm_file_list(tmp_path: Path) -> None:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild not installed (apt-get install rpm)")
    # Build from a copy, so a test run never leaves build/ in the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))  # fmt: skip
    proc = _make("rpm", f"PYTHON={SYSTEM_PYTHON}", cwd=src)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    rpms = src / "build/rpm/RPMS/noarch"
    main = rpms / "nestos-installer-0.1.0-1.noarch.rpm"
    dracut = rpms / "nestos-installer-dracut-0.1.0-1.noarch.rpm"

    def files(rpm: Path) -> set[str]:
        out = subprocess.run(["rpm", "-qlp", str(rpm)], capture_output=True, check=True)
        return set(out.stdout.decode().split())

    listed = files(main)
    for needed in (
        "/usr/bin/nestos-installer",
        "/usr/lib/systemd/system/nestos-installer.service",
        "/usr/lib/systemd/system/nestos-installer.target",
        "/usr/lib/systemd/system-generators/nestos-installer-generator",
        "/usr/libexec/nestos-installer-service",
        "/usr/libexec/nestos-installer-disable-device-auto-activation",
        "/usr/share/nestos-installer/example-config.yaml",
        "/usr/share/nestos-installer/keys.d",
        "/etc/nestos-installer/keys.d",
        "/usr/share/doc/nestos-installer/service-mode.md",
    ):
        assert needed in listed, needed
    sitelib = [f for f in listed if f.endswith("/nestos_inst/keydirs.py")]
    assert sitelib, "Python package missing"
    assert any(f.endswith("/nestos_inst/data/keys/coreos/fedora-coreos-signing-keys.asc")
               for f in listed)  # fmt: skip
    man = {Path(f).name.split(".8")[0] + ".8" for f in listed if "/man8/" in f}
    assert man == _visible_pages()
    assert not [f for f in listed if "/dracut/" in f]
    assert files(dracut) == {
        "/usr/lib/dracut/modules.d/50nestos-installer",
        "/usr/lib/dracut/modules.d/50nestos-installer/module-setup.sh",
        "/usr/lib/dracut/modules.d/50nestos-installer/python-files.py",
    }
    info = subprocess.run(["rpm", "-qip", str(dracut)], capture_output=True, check=True)
    assert "MiB" in info.stdout.decode()  # the initramfs cost is stated
    arch = subprocess.run(["rpm", "-qp", "--qf", "%{ARCH}", str(main)], capture_output=True,
                          check=True)  # fmt: skip
    assert arch.stdout == b"noarch"
