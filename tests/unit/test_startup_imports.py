"""What a start loads: each command imports only what it uses.

Every start pays for its imports in CPU and wall time before any real work (a small
install spends a third of its time there, a TCG guest seconds; docs/internals-net.md,
"Fixed cost of a start"). These tests pin the expensive libraries to the commands that
need them, by the modules loaded when the command ends; no timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import REPO

# Run the entry point as `python -m nestos_inst` does, then list what was imported.
_PROBE = """\
import atexit, os, sys

def _dump():
    with open(os.environ["NESTOS_TEST_MODULES_OUT"], "w") as f:
        f.write("\\n".join(sorted(sys.modules)))

atexit.register(_dump)
from nestos_inst.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

NETWORK = {"httpx", "httpcore", "anyio", "asyncio", "ssl", "nestos_inst.net.http"}
ISO_AND_PXE = {"nestos_inst.media", "nestos_inst.formats.embed", "nestos_inst.formats.initrd"}
YAML = {"yaml", "nestos_inst.formats.yamldoc"}
PYDANTIC = {"pydantic", "pydantic_core"}


def loaded(tmp_path: Path, *args: str | Path) -> set[str]:
    """The modules imported by the time `nestos-installer ARGS` exits (exit 0 expected)."""
    out = tmp_path / "modules.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C", NESTOS_TEST_MODULES_OUT=str(out))
    env.pop("NESTOS_INSTALLER_FAST_PATHS", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *(str(a) for a in args)],
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return set(out.read_text().split())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["install", "--help"]])
def test_help_loads_no_network_yaml_or_media(tmp_path: Path, argv: list[str]) -> None:
    mods = loaded(tmp_path, *argv)
    assert mods & (NETWORK | ISO_AND_PXE | YAML | PYDANTIC) == set()


def test_file_install_loads_no_network_yaml_or_media(tmp_path: Path) -> None:
    """An install from a local file never touches httpx, asyncio or ssl (nor the ISO
    and PXE code; nor PyYAML and pydantic without a config file)."""
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(4096))
    target = tmp_path / "vm.img"
    target.write_bytes(b"")
    mods = loaded(tmp_path, "install", target, "-f", img, "--insecure", "--dry-run")
    assert "nestos_inst.install.main" in mods  # the probe saw a real install run
    assert mods & (NETWORK | ISO_AND_PXE | YAML | PYDANTIC) == set()


def test_config_file_loads_yaml(tmp_path: Path) -> None:
    """The other side of the guard: a config file does bring PyYAML in."""
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(4096))
    target = tmp_path / "vm.img"
    target.write_bytes(b"")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"image-file: {img}\ninsecure: true\n")
    mods = loaded(tmp_path, "install", target, "-c", conf, "--dry-run")
    assert {"yaml", "pydantic"} <= mods
    assert mods & NETWORK == set()


def test_command_words_name_the_modules_that_register_them() -> None:
    """cli.WORDS (which modules a command line needs) matches what each module registers,
    and a command line naming a word gets the same commands under it as the full tree."""
    from nestos_inst.cli import MODULES, WORDS, Registry, build_parser, build_registry
    from nestos_inst.cli.common import Parser

    found: dict[str, list[str]] = {}
    for name in MODULES:
        reg = Registry(Parser(prog="nestos-installer"))
        __import__(f"nestos_inst.cli.{name}", fromlist=["register"]).register(reg)
        for entry in reg.entries:
            found.setdefault(entry.path.split()[0], []).append(name)
    assert {w: tuple(dict.fromkeys(m)) for w, m in found.items()} == WORDS

    full = [e.path for e in build_registry().entries]
    for word in WORDS:
        part = [e.path for e in build_registry(WORDS[word]).entries]
        assert [p for p in part if p.split()[0] == word] == [
            p for p in full if p.split()[0] == word
        ]
        assert build_parser([word]).prog == "nestos-installer"


_FREEZE_PROBE = """\
import atexit, gc, os, sys

atexit.register(lambda: os.write(1, b"frozen=%d\\n" % gc.get_freeze_count()))
from nestos_inst.__main__ import main
sys.exit(main())
"""


@pytest.mark.parametrize(("tricks", "frozen"), [("all", True), ("none", False)])
def test_program_freezes_the_gc_before_shutdown(tricks: str, frozen: bool) -> None:
    """Run as the program (main() without argv), the entry point freezes the GC's
    objects when the command is over (fast path `gc-freeze`); same output either way."""
    env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C", NESTOS_INSTALLER_FAST_PATHS=tricks)
    proc = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE, "--version"],
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    version, count = proc.stdout.decode().splitlines()
    assert version.startswith("nestos-installer ")
    assert (int(count.removeprefix("frozen=")) > 0) is frozen
