"""BLS entry and GRUB console-block editing on a mounted /boot (docs/compat.md#boot-edits).

Only the *last* BLS entry (by path) is edited: that is the default entry ostree
deployed, and the one first boot uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import NestosError
from ..formats.kargs import modify_kargs
from ..io.files import METADATA_LIMIT, read_limited

GRUB_START = "# CONSOLE-SETTINGS-START"
GRUB_END = "# CONSOLE-SETTINGS-END"


def last_bls_entry(boot: Path) -> Path:
    entries = boot / "loader" / "entries"
    try:
        found = sorted(p for p in entries.iterdir() if p.name.endswith(".conf") and p.is_file())
    except OSError as exc:
        raise NestosError(f"reading {entries}") from exc
    if not found:
        raise NestosError(f"Found no BLS entries in {entries}")
    return found[-1]


def _split(entry: Path) -> tuple[list[str], int, str]:
    try:
        lines = read_limited(entry, METADATA_LIMIT).decode().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NestosError(f"reading {entry}") from exc
    found = [i for i, line in enumerate(lines) if line.startswith("options ")]
    if len(found) > 1:
        raise NestosError("Multiple 'options' lines found")
    if not found:
        raise NestosError("Couldn't locate 'options' line")
    idx = found[0]
    return lines, idx, lines[idx][len("options ") :].strip()


def edit_kargs(
    boot: Path,
    *,
    delete: Sequence[str] = (),
    append: Sequence[str] = (),
    append_if_missing: Sequence[str] = (),
    replace: Sequence[str] = (),
) -> tuple[str, str] | None:
    """Run the karg editor on the last entry; None when nothing was requested.

    Returns (old, new). The file is rewritten whenever any operation was requested,
    with other lines right-trimmed and every line ending in a newline.
    """
    if not (delete or append or append_if_missing or replace):
        return None
    entry = last_bls_entry(boot)
    lines, idx, old = _split(entry)
    new = modify_kargs(
        old, delete=delete, append=append, append_if_missing=append_if_missing, replace=replace
    )
    out = [line.rstrip() for line in lines]
    out[idx] = f"options {new.strip()}"
    _write(entry, "".join(line + "\n" for line in out))
    return old, new


def set_platform(boot: Path, platform: str) -> None:
    """Replace `ignition.platform.id=metal` by the requested platform."""
    result = edit_kargs(boot, replace=[f"ignition.platform.id=metal={platform}"])
    if result is None or result[0] == result[1]:
        raise NestosError("couldn't locate platform ID")


def update_grub_block(text: str, commands: Sequence[str]) -> str:
    """Replace the lines between the console markers (first occurrence only)."""
    start = text.find("\n" + GRUB_START + "\n")
    if start < 0:
        raise NestosError("missing substitution marker in grub.cfg")
    body_start = start + len(GRUB_START) + 2
    end = body_start
    while True:
        end = text.find(GRUB_END, end)
        if end < 0:
            raise NestosError("missing substitution marker in grub.cfg")
        if text[end - 1] == "\n":
            break
        end += 1
    body = "".join(c + "\n" for c in commands)
    return text[:body_start] + body + text[end:]


def grub_console_file(boot: Path) -> Path:
    console = boot / "grub2" / "console.cfg"
    return console if console.exists() else boot / "grub2" / "grub.cfg"


def set_grub_console(boot: Path, commands: Sequence[str]) -> None:
    path = grub_console_file(boot)
    try:
        text = read_limited(path, METADATA_LIMIT).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise NestosError(f"reading {path}") from exc
    _write(path, update_grub_block(text, commands))


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically, keeping its mode (a torn BLS entry won't boot)."""
    tmp = path.with_name(f".{path.name}.nestos-tmp")
    try:
        mode = path.stat().st_mode & 0o7777
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NestosError(f"writing {path}") from exc
