#!/usr/bin/env python3
"""List the Python files an initramfs needs to run nestos-installer.

Run by module-setup.sh with the interpreter that has nestos-installer and its
dependencies installed. Prints `tree<TAB>SRC<TAB>DEST` (copy a file or directory
without its shared objects) and `so<TAB>SRC<TAB>DEST` (install with library
dependencies) lines. The interpreter's stdlib keeps its path; nestos_inst and
third-party packages go to one private directory that the initramfs launcher puts first
on sys.path (works the same on every distribution).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import pkgutil
import re
import sys
import sysconfig

PRIVATE = "/usr/lib/nestos-installer/python"
OWN_DIST = "nestos-installer"
# Importable only when the distribution ships the bindings; optional.
OPTIONAL = ("gpg", "systemd", "pyudev", "_yaml")
# Heavy or build-only parts of the stdlib a live installer never imports.
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "distutils",
    "venv",
    "unittest",
}


def emit(src: str, dst: str) -> None:
    """`tree SRC DST` for a file or directory, then `so SRC DST` per shared object."""
    print(f"tree\t{src}\t{dst}")
    if os.path.isdir(src):
        for root, _dirs, files in os.walk(src):
            for f in files:
                if f.endswith(".so") or ".so." in f:
                    path = os.path.join(root, f)
                    print(f"so\t{path}\t{dst}/{os.path.relpath(path, src)}")
    elif src.endswith(".so"):
        print(f"so\t{src}\t{dst}")


def requirements(dist: str, seen: set[str]) -> None:
    key = re.sub(r"[-_.]+", "-", dist).lower()
    if key in seen:
        return
    seen.add(key)
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return
    for req in reqs:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        if name:
            requirements(name, seen)


def installed_names(dist: md.Distribution) -> set[str]:
    """Top-level import names a distribution put on sys.path.

    top_level.txt when it has one. Otherwise the installed-file list, but only a
    real one (a wheel's RECORD, an egg's installed-files.txt): an egg-info directory
    without them answers `files` from SOURCES.txt, the files of the *source tree*.
    That is what an editable checkout carries (`pip install -e` writes
    nestos_installer.egg-info there), and its SOURCES.txt names tests/, docs/,
    dracut/, units/, packaging/ ... of the checkout, which then resolved to the
    checkout's directories (or, for `packaging`, to an unrelated library).
    Only identifiers count: .pth files, scripts in ../bin, *.data are not modules.
    """
    text = dist.read_text("top_level.txt")
    if text:
        return {t for t in text.split() if t.isidentifier()}
    if dist.read_text("RECORD") is None and dist.read_text("installed-files.txt") is None:
        return set()
    out: set[str] = set()
    for f in dist.files or ():
        if len(f.parts) > 1:
            name = f.parts[0]
        elif f.name.endswith((".py", ".so")):
            name = f.name.split(".")[0]
        else:
            continue
        if name.isidentifier():
            out.add(name)
    return out


def top_levels(dists: set[str]) -> set[str]:
    out: set[str] = set()
    for dist in md.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name in dists:
            out |= installed_names(dist)
    return out


def main() -> int:
    import nestos_inst

    for mod in pkgutil.walk_packages(nestos_inst.__path__, "nestos_inst."):
        # Optional parts may need bindings this host lacks: skip them.
        with contextlib.suppress(Exception):
            importlib.import_module(mod.name)
    names = {m.split(".")[0] for m in list(sys.modules)}
    seen: set[str] = set()
    requirements("nestos-installer", seen)
    for extra in ("pydantic", "httpx", "pyyaml", "zstandard"):
        requirements(extra, seen)
    # Our own distribution ships exactly the nestos_inst package (found by import
    # above, data files included): whatever else its metadata lists is not runtime.
    names |= top_levels(seen - {OWN_DIST})
    names.update(OPTIONAL)
    base = {
        "base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    stdlib = os.path.dirname(os.__file__)
    platstdlib = sysconfig.get_path("platstdlib", vars=base)
    stdnames = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    for name in sorted(names):
        if name in stdnames or name in ("sitecustomize", "usercustomize"):
            continue
        if name.startswith("_") and name not in OPTIONAL:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                emit(loc, f"{PRIVATE}/{os.path.basename(loc)}")
        elif spec.origin and os.path.isfile(spec.origin):
            emit(spec.origin, f"{PRIVATE}/{os.path.basename(spec.origin)}")
    for top in sorted({os.path.realpath(stdlib), os.path.realpath(platstdlib)}):
        for entry in sorted(os.listdir(top)):
            if entry in STDLIB_SKIP or entry.startswith("config-"):
                continue
            emit(os.path.join(top, entry), os.path.join(top, entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
