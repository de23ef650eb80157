"""Build partitioned disk images with independent tools (sfdisk), and inspect them.

Tables made by sfdisk check our reader; tables we write are checked with sfdisk --json
and sgdisk -v. Images are sparse files, so a "64 MiB disk" costs a few KiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.loop import loop_device

LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MIB = 1 << 20


@dataclass(frozen=True)
class Part:
    """A partition for sfdisk; start/size in sectors (start None = next aligned)."""

    name: str
    size: int | None = None
    start: int | None = None
    type: str = LINUX_FS
    uuid: str | None = None
    number: int | None = None


def _script(parts: Sequence[Part], first_lba: int | None = None) -> str:
    lines = ["label: gpt"]
    if first_lba is not None:
        lines.append(f"first-lba: {first_lba}")
    for p in parts:
        attrs = []
        if p.start is not None:
            attrs.append(f"start={p.start}")
        if p.size is not None:
            attrs.append(f"size={p.size}")
        attrs.append(f"type={p.type}")
        attrs.append(f'name="{p.name}"')
        if p.uuid is not None:
            attrs.append(f"uuid={p.uuid}")
        line = ", ".join(attrs)
        if p.number is not None:
            # sfdisk takes the number from a device-name prefix's trailing digits.
            line = f"part{p.number} : {line}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def sfdisk_write(
    target: str | os.PathLike[str], parts: Sequence[Part], first_lba: int | None = None
) -> None:
    """Partition a file (512-byte sectors) or a block device (its own sector size).

    sfdisk puts the first usable LBA at 1 MiB unless told; OS images use 34 (or 6).
    """
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "-w", "never", os.fspath(target)],
        input=_script(parts, first_lba),
        text=True,
        check=True,
        capture_output=True,
    )


def make_image(
    path: Path,
    size: int,
    parts: Sequence[Part],
    *,
    sector_size: int = 512,
    first_lba: int | None = None,
) -> Path:
    """A sparse image of `size` bytes with a GPT made by sfdisk (4Kn via a 4K loop)."""
    with open(path, "wb") as f:
        f.truncate(size)
    if sector_size == 512:
        sfdisk_write(path, parts, first_lba)
    else:
        with loop_device(path, sector_size=sector_size, partitions=False) as dev:
            sfdisk_write(dev, parts, first_lba)
    return path


def sfdisk_json(target: str | os.PathLike[str]) -> dict[str, Any]:
    """sfdisk's view of a table (raises if sfdisk finds none)."""
    out = subprocess.run(
        ["sfdisk", "--json", os.fspath(target)], check=True, capture_output=True, text=True
    ).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def sgdisk_verify(target: str | os.PathLike[str]) -> str:
    """`sgdisk -v` output; asserts it found no problems."""
    proc = subprocess.run(
        ["sgdisk", "-v", os.fspath(target)], capture_output=True, text=True, check=False
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "No problems found" in text, text
    return text


def random_guid() -> str:
    return str(uuid.uuid4()).upper()


def pattern(size: int, seed: int = 0) -> bytes:
    """Recognisable non-zero bytes (byte i = (i + seed) mod 251 + 1)."""
    block = bytes((i + seed) % 251 + 1 for i in range(251 * 16))
    reps = -(-size // len(block))
    return (block * reps)[:size]
