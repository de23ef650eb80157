"""A missing third-party module is a clear `Error:` naming the package, not a traceback.

Each case runs the real CLI with `python -S` and a sys.path made of links to every
module of this environment's site directories except the hidden ones, so the
installer sees exactly what a system without that package would show it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import REPO
from tests.helpers.httpserver import Server, http_server


def _site_dirs() -> list[Path]:
    dirs = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    dirs += [Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def shadow_site(tmp: Path, hidden: set[str]) -> Path:
    """One directory linking every top-level module of the site dirs but `hidden`."""
    out = tmp / "site"
    out.mkdir(parents=True)
    for d in _site_dirs():
        for entry in d.iterdir():
            top = entry.name.split(".")[0].split("-")[0].lower()
            if top in hidden or entry.suffix == ".pth" or (out / entry.name).exists():
                continue
            (out / entry.name).symlink_to(entry)
    return out


def run_hidden(tmp: Path, hidden: set[str], *args: str) -> subprocess.CompletedProcess[bytes]:
    shadow = shadow_site(tmp, hidden)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{REPO}{os.pathsep}{shadow}",
        "LC_ALL": "C",
        "HOME": str(tmp),
    }
    for var in ("NESTOS_INSTALLER_DIST_KEYS_DIR", "NESTOS_INSTALLER_ADMIN_KEYS_DIR"):
        env[var] = os.environ.get(var, str(tmp / "none"))
    return subprocess.run(
        [sys.executable, "-S", "-m", "nestos_inst", *args],
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    img = tmp_path / "a.raw"
    img.write_bytes(b"image\n" * 1000)
    with http_server() as srv:
        srv.add("/a.raw", img)
        srv.add("/a.raw.sig", b"a signature\n")
        srv.add("/b.raw", img)  # unsigned
        yield srv


def test_without_httpx(tmp_path: Path, server: Server) -> None:
    proc = run_hidden(tmp_path, {"httpx"}, "download", "-C", str(tmp_path), "-u",
                      server.url("/b.raw"), "--insecure")  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err == (
        "Error: the Python module 'httpx' (HTTP client) is not installed: install the "
        "python3-httpx package (or `pip install httpx`)\n"
    )


def test_without_pydantic(tmp_path: Path) -> None:
    """A config file needs pydantic (the command line alone does not: it is parsed and
    checked by the options' own parsers; tests/unit/test_startup_imports.py)."""
    target = tmp_path / "disk.img"
    target.write_bytes(b"")
    conf = tmp_path / "c.yaml"
    conf.write_text("insecure: true\n")
    proc = run_hidden(tmp_path, {"pydantic", "pydantic_core"}, "install", str(target),
                      "-f", str(target), "-c", str(conf), "--dry-run")  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Error: the Python module 'pydantic' (data validation) is not installed" in err
    assert "Traceback" not in err


def test_without_gpgme_binding(tmp_path: Path, server: Server) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # --insecure paths need no GPGME at all...
    proc = run_hidden(tmp_path / "1", {"gpg"}, "download", "-C", str(out), "-u",
                      server.url("/a.raw"), "--insecure")  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "a.raw").is_file()
    # ...verification says which distribution package brings it.
    (out / "a.raw").unlink()
    (out / "a.raw.sig").unlink()
    proc = run_hidden(tmp_path / "2", {"gpg"}, "download", "-C", str(out), "-u",
                      server.url("/a.raw"), "--keyring", "/nonexistent.asc")  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.endswith(
        "Error: the Python module 'gpg' (GPGME bindings (image signature checks)) is not "
        "installed: install the python3-gpg package; --insecure skips signature checks "
        "and does not need it\n"
    ), err
    assert list(out.iterdir()) == []
