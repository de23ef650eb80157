"""NetworkManager keyfiles checked with NetworkManager's own parser (libnm).

A keyfile that NetworkManager rejects is silently ignored by the live system, which
then boots without the network the user asked for and installs nothing. So every
keyfile we embed, given (`--network-keyfile`) or generated (`--network-nmstate`), is
read by libnm's keyfile reader and normalised like the daemon does when it loads a
profile. libnm is reached through GObject introspection (Debian: `python3-gi` and
`gir1.2-nm-1.0`; openEuler/Fedora: `python3-gobject` and `NetworkManager-libnm`).
Without them only the INI structure is checked.
"""

from __future__ import annotations

import configparser
import os
from functools import cache
from typing import Any

from ..errors import NestosError

# Where the live system puts them; relative certificate paths resolve against it.
KEYFILE_DIR = "/etc/NetworkManager/system-connections"
SUFFIX = ".nmconnection"


@cache
def libnm() -> tuple[Any, Any] | None:
    """(GLib, NM) from GObject introspection, or None when not installed."""
    try:
        import gi

        gi.require_version("NM", "1.0")
        from gi.repository import NM, GLib
    except (ImportError, ValueError):
        return None
    if not hasattr(NM, "keyfile_read"):  # libnm < 1.30
        return None
    return GLib, NM


def check_keyfile(name: str, data: bytes) -> None:
    """Raise NestosError (the parser's message as cause) if NetworkManager would refuse
    the keyfile `name` (its file name, used like the daemon does for a missing id)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NestosError("keyfile is not valid UTF-8") from exc
    if "\0" in text:
        raise NestosError("keyfile contains a NUL byte")
    lib = libnm()
    if lib is None:
        check_ini(text)
        return
    glib, nm = lib
    kf = glib.KeyFile()
    try:
        kf.load_from_data(text, len(data), glib.KeyFileFlags.NONE)
        if not kf.has_group("connection"):
            raise NestosError("keyfile has no [connection] group")
        if not _has_key(kf, "connection", "id"):
            # The daemon names a profile without id after its file; so do we.
            stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
            kf.set_string("connection", "id", stem)
        conn = nm.keyfile_read(kf, KEYFILE_DIR, nm.KeyfileHandlerFlags.NONE, None, None)
        conn.normalize(None)
    except glib.Error as exc:
        raise NestosError(exc.message) from None


def _has_key(kf: Any, group: str, key: str) -> bool:
    try:
        return bool(kf.has_key(group, key))
    except Exception:  # GLib raises when the group is missing
        return False


def check_ini(text: str) -> None:
    """Fallback without libnm: a parseable INI file with a [connection] group."""
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise NestosError(str(exc).splitlines()[0]) from None
    if not parser.has_section("connection"):
        raise NestosError("keyfile has no [connection] group")


def keyfile_name(path: str) -> str:
    """The member name of a keyfile given on the command line: its base name."""
    return os.path.basename(path)
