"""Signed benchmark inputs: a scratch directory with a throw-away signing key, and
published (linked + signed) cached images, for the benchmarks that verify as install
and download do."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.images import compressed
from tests.helpers.gpgkey import SigningKey, make_key


@contextlib.contextmanager
def signing_workdir(prefix: str) -> Iterator[tuple[Path, SigningKey]]:
    """A directory under /var/tmp (next to the image cache, not in a small tmpfs) with
    a fresh key; the key's gpg agent is stopped and the directory removed afterwards,
    whatever happened."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        key = make_key(work / "key")
        try:
            yield work, key
        finally:
            key.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(fmt: str, size_mib: int, served: Path, key: SigningKey) -> str:
    """A link to the cached image in `served` (nginx's root or a source directory),
    with a fresh signature beside it; returns the link's name."""
    src = compressed(fmt, size_mib)
    name = f"{fmt}-{src.name}"
    link = served / name
    if not link.is_symlink():
        link.symlink_to(src)
        key.sign(link)
    return name
