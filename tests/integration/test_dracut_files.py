"""What the dracut module copies into an initramfs (dracut/50nestos-installer).

`python-files.py` lists the Python trees `module-setup.sh` copies; every byte of them
is unpacked at each boot of the live or install initramfs. It must name the
nestos_inst package and its runtime dependencies, nothing else, however the
installer is installed: an editable checkout (`make venv`: the checkout's
nestos_installer.egg-info lists the whole source tree), the e2e harness's
`make install DESTDIR=` stage seen by the venv's interpreter (vm.dracut_image), and
an installed package alone, as from the RPM. The script really runs for each; the
module's shell side is covered by the e2e scenarios that boot its image.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers.cli import REPO

SCRIPT = REPO / "dracut" / "50nestos-installer" / "python-files.py"
PRIVATE = "/usr/lib/nestos-installer/python"
SYSTEM_PYTHON = "/usr/bin/python3"
# Bindings the distribution ships (python3-gpg, -systemd, -pyudev, PyYAML's C part):
# taken when importable, never declared as pip requirements.
OPTIONAL = {"gpg", "systemd", "pyudev", "_yaml"}


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_names() -> set[str]:
    """Import names of nestos-installer's declared runtime dependencies, transitively
    (extras left out), read from this interpreter's installed metadata."""
    tops: dict[str, set[str]] = {}
    for top, dists in md.packages_distributions().items():
        for dist in dists:
            tops.setdefault(_key(dist), set()).add(top)
    names: set[str] = set()
    todo, seen = ["nestos-installer"], set()
    while todo:
        dist = _key(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        if dist != "nestos-installer":
            names |= tops.get(dist, set())
        try:
            reqs = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        todo += [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]
    return names


def _private_trees(python: str, pythonpath: str | None) -> dict[str, Path]:
    """{name under the private dir: source path} of one python-files.py run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["LC_ALL"] = "C"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(
        [python, "-s", str(SCRIPT)], capture_output=True, env=env, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    trees: dict[str, Path] = {}
    for line in proc.stdout.decode().splitlines():
        kind, src, dst = line.split("\t")
        if kind == "tree" and dst.startswith(PRIVATE + "/"):
            rel = dst.removeprefix(PRIVATE + "/")
            assert "/" not in rel, line
            trees[rel] = Path(src)
    return trees


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install-python DESTDIR=`: the package as a distribution installs it
    (setuptools builds in a private directory, so a concurrent e2e image build from
    the same checkout is no concern: tests/integration/test_packaging.py)."""
    root = tmp_path_factory.mktemp("stage")
    env = dict(os.environ, LC_ALL="C")
    env.pop("MAKEFLAGS", None)
    proc = subprocess.run(
        ["make", "-s", "install-python", f"DESTDIR={root}", "PREFIX=/usr",
         f"PYTHON={SYSTEM_PYTHON}"],
        cwd=REPO, capture_output=True, env=env, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    site = root / "usr/lib/python3/dist-packages"
    assert (site / "nestos_inst" / "__init__.py").is_file()
    return site


def _check(trees: dict[str, Path], package: Path) -> None:
    names = set(trees)
    assert trees.get("nestos_inst") == package, trees.get("nestos_inst")
    # The checkout's other top-level entries (tests, docs, dracut, units, data,
    # packaging, ...) never, whatever resolves under their names.
    checkout = {p.name for p in REPO.iterdir()} - {"nestos_inst"}
    assert not names & checkout, sorted(names & checkout)
    for name, src in trees.items():
        inside = src.is_relative_to(REPO) and not src.is_relative_to(Path(sys.prefix))
        assert not inside or src == REPO / "nestos_inst", (name, src)
    allowed = {"nestos_inst"} | _runtime_names() | OPTIONAL
    stray = {n.removesuffix(".py").split(".")[0] for n in names} - allowed
    assert not stray, sorted(stray)
    for needed in ("pydantic", "pydantic_core", "httpx", "yaml", "zstandard"):
        assert needed in names, needed
    # The keys are package data: they travel inside the nestos_inst tree.
    assert (package / "data" / "keys").is_dir()


def test_editable_checkout_ships_only_the_package() -> None:
    import nestos_inst

    package = Path(nestos_inst.__file__).parent
    if package != REPO / "nestos_inst":
        pytest.skip("this interpreter's nestos_inst is not this checkout's")
    _check(_private_trees(sys.executable, None), package)


def test_e2e_stage_ships_only_the_package(stage: Path) -> None:
    """The venv's interpreter with the staged install first on the path, as
    tests/e2e/vm.py builds the install initramfs and the live root."""
    _check(_private_trees(sys.executable, str(stage)), stage / "nestos_inst")


def test_installed_package_ships_only_the_package(stage: Path) -> None:
    """No checkout on sys.path: the system interpreter with the staged install and the
    dependencies' directory (PYTHONPATH processes no .pth file, so the editable
    install's link to the checkout stays out), as on a system with the RPM."""
    deps = sysconfig.get_path("purelib")
    trees = _private_trees(SYSTEM_PYTHON, f"{stage}{os.pathsep}{deps}")
    _check(trees, stage / "nestos_inst")
