"""Reading small inputs and writing outputs without ever losing or leaking anything.

Two rules every command follows, in one place so that no command can get them wrong:

* **Bounded reads.** Anything we hold in memory (Ignition configs, config files,
  keyrings, keyfiles, metadata on the image) is read through `read_limited`, which
  stops one byte past a documented limit. A path may name a FIFO, a device or
  `/dev/zero`: memory stays bounded, and the error names the input and the limit.
* **Outputs appear whole or not at all.** `atomic_output` writes into a temporary
  file beside the target and moves it into place only after every byte (and the
  mode) is right: a full disk, a signal or an exception leaves no partial file and
  leaves an earlier file at the path untouched. Files that can hold secrets
  (Ignition configs, network keyfiles) are created 0600 from the first byte.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from ..errors import NestosError

KiB = 1 << 10
MiB = 1 << 20

# Documented in docs/internals-io.md ("Input size limits"); keep the two in step.
IGNITION_LIMIT = 64 * MiB  # same as an Ignition config fetched over HTTP(S)
CONFIG_FILE_LIMIT = 1 * MiB  # installer YAML config files
KEYRING_LIMIT = 16 * MiB  # OpenPGP keyrings given to verification
KEYFILE_LIMIT = 1 * MiB  # each NetworkManager keyfile
METADATA_LIMIT = 16 * MiB  # JSON/text metadata read from an image or /boot
CMDLINE_LIMIT = 1 * MiB  # a kernel command line file
CA_FILE_LIMIT = 16 * MiB  # SSL_CERT_FILE (a distribution bundle is ~200 KiB)

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
_CHUNK = 64 * KiB


class TooLargeError(NestosError):
    """An input is longer than its limit (the message gives the limit)."""


def human_size(n: int) -> str:
    """`64 MiB`, `1 KiB`, `17 bytes`: limits as people write them."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def read_stream_limited(f: BinaryIO, limit: int, name: str) -> bytes:
    """Everything `f` holds, refusing more than `limit` bytes (reads at most limit+1)."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = f.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise TooLargeError(f"{name} is larger than the limit of {human_size(limit)}")
        parts.append(chunk)


def read_limited(
    path: str | os.PathLike[str] | None, limit: int, *, message: str | None = None
) -> bytes:
    """All of the file at `path` (stdin for None or `-`), at most `limit` bytes.

    Errors are `opening <path>` / `reading <path>` (or `message` for both) caused by
    the reason: the OS error, a directory where a file was expected, or the limit."""
    if path is None or os.fspath(path) == "-":
        with _reading(message or "reading stdin"):
            return read_stream_limited(sys.stdin.buffer, limit, "stdin")
    shown = os.fspath(path)
    with _reading(message or f"opening {shown}"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _reading(message or f"reading {shown}"):
            if stat.S_ISDIR(os.fstat(fd).st_mode):  # before fdopen, which refuses it itself
                raise IsADirectoryError(21, os.strerror(21))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as f, _reading(message or f"reading {shown}"):
        return read_stream_limited(f, limit, shown)


@contextlib.contextmanager
def _reading(message: str) -> Iterator[None]:
    try:
        yield
    except (OSError, NestosError) as exc:
        raise NestosError(message) from exc


# ---- outputs -----------------------------------------------------------------------------


def _temp_beside(path: str, mode: int) -> tuple[int, str]:
    """An exclusive `.<name>.XXXXXX.tmp` in the target's directory, created with `mode`
    (the umask applies), so that the rename into place stays on one filesystem."""
    parent = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    for _ in range(100):
        tmp = os.path.join(parent, f".{base}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(17, "too many temporary file collisions", parent)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    mode: int = PUBLIC_MODE,
    replace: bool = True,
) -> Iterator[BinaryIO]:
    """A file object whose contents appear at `path` only if the block succeeds.

    `replace=True` renames over an existing file (the previous file stays intact until
    the new one is complete); `replace=False` is create-new: an existing path, even a
    dangling symlink, is `File exists` and stays as it was. On any failure the
    temporary file is removed. Errors are `opening|writing|persisting ... <path>`."""
    target = os.fspath(path)
    if os.path.isdir(target):
        raise NestosError(f"opening {target}") from IsADirectoryError(21, os.strerror(21), target)
    if not replace and os.path.lexists(target):
        raise NestosError(f"opening {target}") from FileExistsError(17, os.strerror(17), target)
    try:
        fd, tmp = _temp_beside(target, mode)
    except OSError as exc:
        raise NestosError(f"opening {target}") from exc
    try:
        f = os.fdopen(fd, "wb")
        try:
            yield f
            f.close()  # flushes: a full disk shows up here at the latest
        except OSError as exc:
            raise NestosError(f"writing {target}") from exc
        finally:
            if not f.closed:
                f.raw.close()  # drop unwritable buffered bytes
        try:
            if replace:
                os.rename(tmp, target)
            else:
                os.link(tmp, target)  # fails with EEXIST instead of clobbering
                os.unlink(tmp)
        except OSError as exc:
            raise NestosError(f"persisting output file to {target}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = PUBLIC_MODE, replace: bool = True
) -> None:
    """`data` as the whole new file at `path` (see `atomic_output`)."""
    with atomic_output(path, mode=mode, replace=replace) as f:
        f.write(data)


def create_new(path: str | os.PathLike[str], data: bytes, mode: int = PUBLIC_MODE) -> None:
    """A new file holding `data`; an existing path is an error and stays untouched."""
    write_file(path, data, mode=mode, replace=False)


def refuse_existing(paths: Sequence[str]) -> None:
    """Fail before writing anything if a target exists (create-new would fail later)."""
    for path in paths:
        if os.path.lexists(path):
            raise NestosError(f"opening {path}") from FileExistsError(17, os.strerror(17), path)


class Created:
    """Files a multi-file command has created so far, removed again if it fails.

    Use as `with Created() as created: ...; created.add(path)`; on an exception every
    added path is unlinked (directories it made too, when they are empty)."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.dirs: list[str] = []

    def add(self, path: str) -> None:
        self.files.append(path)

    def makedirs(self, directory: str) -> None:
        """`os.makedirs`, remembering each directory it had to create."""
        missing: list[str] = []
        cur = os.path.abspath(directory)
        while not os.path.isdir(cur):
            missing.append(cur)
            parent = os.path.dirname(cur)
            if parent == cur:
                break
            cur = parent
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise NestosError(f"creating directory {directory}") from exc
        self.dirs.extend(missing)  # deepest first

    def __enter__(self) -> Created:
        return self

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        for path in reversed(self.files):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
