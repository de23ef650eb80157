"""nmstate network states to NetworkManager keyfiles, through a real nmstate.

nmstate's state language (interfaces, bonds, VLANs, routes, DNS...) is large and its
mapping onto NetworkManager settings is nmstate's own business; re-implementing a
subset would silently produce different networks. So we hand the state to nmstate:

1. `nmstatectl gc FILE` when `nmstatectl` is on PATH (the `nmstate` package of NestOS,
   openEuler and Fedora). It prints YAML mapping `NetworkManager` to a list of
   `[file name, keyfile text]` pairs.
2. Otherwise the Python libnmstate (PyPI `nmstate` 2.0.0, installed with `--no-deps`)
   whose `generate_configurations()` builds the keyfiles with libnm (Debian:
   `python3-gi`, `gir1.2-nm-1.0`). libnmstate imports `nispor` (a kernel-state query
   library with no Debian or PyPI build) at import time but never uses it to generate
   configurations; when nispor is missing a stand-in module that refuses every query
   takes its place, so only the generation path is usable, which is all we call.

With neither, the error names what to install. Each generated keyfile is then checked
with NetworkManager's parser like a given one (customize.keyfile).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, NestosError
from ..formats import yamldoc
from ..io import files
from .keyfile import libnm

INSTALL_HINT = (
    "no nmstate implementation found: install the nmstate package (nmstatectl), "
    "or python3-gi, gir1.2-nm-1.0 and the Python nmstate 2.0.0 "
    "(pip install --no-deps nmstate==2.0.0)"
)


@dataclass(frozen=True)
class Backend:
    """How a state file becomes keyfiles: name for messages, generate(path, state)."""

    name: str
    generate: Callable[[str, dict[str, Any]], list[tuple[str, str]]]


def load_state(path: str) -> dict[str, Any]:
    """The nmstate YAML/JSON document at `path` (JSON is read as the YAML it is)."""
    raw = files.read_limited(path, files.METADATA_LIMIT, message=f"opening nmstate file {path}")
    try:
        state = yamldoc.load(raw)
    except FormatError as exc:
        raise NestosError(f"parsing nmstate file {path}") from exc
    if not isinstance(state, dict):
        raise NestosError(f"parsing nmstate file {path}") from NestosError(
            "expected a mapping (interfaces:, routes:, dns-resolver: ...)"
        )
    return state


def _pairs(result: Any) -> list[tuple[str, str]]:
    """The `NetworkManager` list of [name, content] pairs, type-checked."""
    if not isinstance(result, dict):
        raise NestosError("nmstate returned no configuration")
    items = result.get("NetworkManager") or []
    if not isinstance(items, list):
        raise NestosError("nmstate returned a malformed NetworkManager list")
    out: list[tuple[str, str]] = []
    for item in items:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise NestosError("nmstate returned a malformed [name, content] pair")
        out.append((item[0], item[1]))
    return out


def _nmstatectl(exe: str) -> Backend:
    def generate(path: str, _state: dict[str, Any]) -> list[tuple[str, str]]:
        proc = subprocess.run(
            [exe, "gc", path], capture_output=True, stdin=subprocess.DEVNULL, check=False
        )
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
            raise NestosError(f"nmstatectl gc failed: {detail}")
        try:
            return _pairs(yamldoc.load(proc.stdout))
        except FormatError as exc:
            raise NestosError("parsing nmstatectl gc output") from exc

    return Backend(f"nmstatectl ({exe})", generate)


class _NisporStandIn(types.ModuleType):
    """Takes the place of the absent `nispor` module; see the module docstring."""

    class NisporNetState:
        @staticmethod
        def retrieve(*_args: Any, **_kwargs: Any) -> Any:
            raise NestosError("nispor is not installed: kernel network state unavailable")


def _import_libnmstate() -> Any:
    if importlib.util.find_spec("libnmstate") is None:
        return None
    if "nispor" not in sys.modules and importlib.util.find_spec("nispor") is None:
        sys.modules["nispor"] = _NisporStandIn("nispor")
    try:
        return importlib.import_module("libnmstate")
    except ImportError:
        return None


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """libnmstate logs plugin-loading warnings (no OVS bindings...) on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _libnmstate(module: Any) -> Backend:
    def generate(_path: str, state: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            with _quiet_logging():
                result = module.generate_configurations(state)
        except NestosError:
            raise
        except Exception as exc:  # NmstateError and the library's own bugs alike
            raise NestosError(f"{type(exc).__name__}: {exc}") from None
        if not result.get("NetworkManager") and state.get("interfaces"):
            raise NestosError("libnmstate produced no NetworkManager configuration")
        return _pairs(result)

    return Backend("libnmstate", generate)


def find_backend(
    which: Callable[[str], str | None] = shutil.which,
    import_libnmstate: Callable[[], Any] = _import_libnmstate,
    have_libnm: Callable[[], bool] = lambda: libnm() is not None,
) -> Backend:
    """nmstatectl if on PATH, else libnmstate with libnm, else INSTALL_HINT."""
    exe = which("nmstatectl")
    if exe is not None:
        return _nmstatectl(exe)
    if have_libnm():
        module = import_libnmstate()
        if module is not None:
            return _libnmstate(module)
    raise NestosError(INSTALL_HINT)


def check_name(name: str) -> None:
    """A generated file name must be a plain file name (it becomes an initrd member)."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    ):
        raise NestosError(f"nmstate generated an unusable file name {name!r}")


def generate_keyfiles(path: str, backend: Backend | None = None) -> list[tuple[str, bytes]]:
    """Keyfiles (file name, bytes) for the nmstate file at `path`."""
    state = load_state(path)
    try:
        chosen = backend or find_backend()
        pairs = chosen.generate(os.fspath(path), state)
        for name, _ in pairs:
            check_name(name)
    except NestosError as exc:
        raise NestosError(f"generating configuration from nmstate file {path}") from exc
    return [(name, content.encode("utf-8")) for name, content in pairs]
