"""A full + minimal live ISO pair built with xorriso, packed with our `pack minimal-iso`.

The minimal ISO is the full tree minus the rootfs and miniso.dat, so the two share
every other file at different sectors, like a real build. The expected output of
`iso extract minimal-iso` is computed here from xorriso's own LBAs, not from our code.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nestos_inst import profile as profiles
from tests.helpers.isomedia import LiveIso, LiveIsoSpec, build_live_iso, karg_area, ok, run_main

MINISO_SIZE = 16 * 1024
ROOTFS_SIZE = 96 * 1024


@dataclass
class MinisoPair:
    full: LiveIso  # with miniso.dat packed
    minimal: Path  # the pristine minimal ISO (kept for reference)
    rootfs: bytes
    pack_stderr: str

    @property
    def profile(self) -> profiles.Profile:
        return self.full.spec.profile

    def minimal_sha(self) -> str:
        return hashlib.sha256(self.minimal.read_bytes()).hexdigest()

    def new_default(self) -> str:
        liveiso = self.profile.liveiso_karg + "="
        return " ".join(k for k in self.full.default_kargs.split() if not k.startswith(liveiso))

    def expected(self, minimal: LiveIso, rootfs_url: str | None = None) -> bytes:
        """What extraction must produce: kargs slots and kargs.json rewritten."""
        spec = minimal.spec
        new_default = self.new_default()
        current = new_default
        if rootfs_url is not None:
            current += f" {self.profile.live_rootfs_url_karg}={rootfs_url}"
        data = bytearray(minimal.path.read_bytes())
        area = karg_area(current, spec.karg_size, spec.pad or "#", spec.end or "\n")
        for off in minimal.karg_offsets:
            data[off : off + len(area)] = area
        meta = spec.profile.iso_dir.lower()
        off, size = minimal.lbas[f"{meta}/kargs.json"]
        original = json.loads(data[off : off + size])
        files: list[dict[str, Any]] = []
        for f in original["files"]:
            item = {"path": f["path"], "offset": f["offset"]}
            item.update({k: f[k] for k in ("pad", "end") if k in f})
            files.append(item)
        text = json.dumps(
            {"default": new_default, "files": files, "size": original["size"]},
            indent=2,
            ensure_ascii=False,
        ).encode()
        data[off : off + size] = text + b" " * (size - len(text))
        return bytes(data)


def rootfs_bytes(size: int = ROOTFS_SIZE, seed: int = 7) -> bytes:
    """Incompressible, so a wrong table shows up as a size blow-up, not just a hash."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not secrets


def build_pair(work: Path, spec: LiveIsoSpec | None = None) -> tuple[MinisoPair, LiveIso]:
    """(packed pair, minimal LiveIso) in `work`; the pack runs through our CLI."""
    spec = spec or LiveIsoSpec()
    meta = spec.profile.iso_dir.lower()
    rootfs = rootfs_bytes()
    full_spec = replace(
        spec,
        extra_files={
            **spec.extra_files,
            "images/pxeboot/rootfs.img": rootfs,
            f"{meta}/miniso.dat": bytes(MINISO_SIZE),
        },
    )
    full = build_live_iso(work / "full.iso", full_spec)
    minimal = build_live_iso(work / "minimal.iso", spec)
    res = ok(run_main("pack", "minimal-iso", str(full.path), str(minimal.path)))
    return MinisoPair(full, minimal.path, rootfs, res.stderr.decode()), minimal
