"""`download` and `list-stream` (docs/compat.md#list-stream, #download)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .deps import require as require_module
from .errors import NestosError
from .io.compress import open_decompressed
from .io.files import read_limited
from .io.kernel import Writeback
from .io.pipeline import copy_to_fd, write_all
from .keydirs import INSECURE_SKIP, no_keys_message, trusted_key_files
from .profile import DEFAULT, Profile
from .progress import Progress
from .report import say, write
from .sources import ImageSource, UrlSource, VerifiedReader, stream_sources
from .verify import PreparedHome, StreamVerifier, verify_file

COPY_SIZE = 1 << 20


def should_decompress(name: str, decompress: bool) -> str | None:
    """The output name when `name` is to be decompressed (docs/compat.md#download), else None."""
    if not decompress or name.endswith((".tar.gz", ".tar.xz")):
        return None
    for suffix in (".gz", ".xz"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Options:
    directory: Path
    decompress: bool
    insecure: bool
    keyrings: tuple[Path, ...]  # --keyring files (the profile's key directories come first)
    profile: Profile = DEFAULT


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_in(directory: Path) -> tuple[int, Path]:
    """A private (0600) temp file beside the final one, so rename() is atomic."""
    try:
        fd, name = tempfile.mkstemp(prefix=DEFAULT.temp_prefix, dir=directory)
    except OSError as exc:
        raise NestosError(f"creating temporary file in {directory}") from exc
    return fd, Path(name)


def _already_there(src: ImageSource, out: Path, sig: bytes, keys: list[Path]) -> bool:
    """docs/compat.md#download: reuse a present file only if its .sig matches and it verifies."""

    sig_path = Path(f"{out}.sig")
    try:
        if not out.is_file() or read_limited(sig_path, len(sig)) != sig:
            return False
    except (OSError, NestosError):  # unreadable, or longer than the new signature
        return False
    result = verify_file(out, sig, keys)
    if not result.ok:
        return False
    if src.sha256 is not None:
        import hashlib

        digest = hashlib.sha256()
        with open(out, "rb") as f:
            while block := f.read(COPY_SIZE):
                digest.update(block)
        if digest.hexdigest() != src.sha256:
            return False
    write(result.status_text)
    return True


def download_artifact(src: ImageSource, opts: Options) -> Path:
    """Fetch one artifact into opts.directory; returns the path (printed by the caller).

    Data land in a temp file that is renamed into place only after every check passed,
    so a failure never leaves a partial image or .sig (and keeps what was there).
    """

    # --insecure skips verification entirely (no GPG, no keys needed), as upstream's.
    keys: list[Path] = []
    if not opts.insecure:
        require_module("gpg")
        keys = trusted_key_files(opts.profile, opts.keyrings)
    # Building the GPG home overlaps with the fetches.
    home = PreparedHome(keys) if keys else None
    try:
        sig = src.signature()
        if sig is not None and not opts.insecure and not keys:
            raise NestosError(no_keys_message(opts.profile))
        raw = src.open()
        try:
            name = src.filename
            target = should_decompress(name, opts.decompress)
            out = opts.directory / (target or name)
            if sig is None:
                if not opts.insecure:
                    raise NestosError("--insecure not specified and signature not found")
                say("Signature not found; skipping verification as requested")
            elif opts.insecure:
                say(INSECURE_SKIP)
            elif not opts.decompress and _already_there(src, out, sig, keys):
                return out
            verifier = None
            if sig is not None and home is not None:
                verifier = StreamVerifier(sig, keys, home=home.take())
        except BaseException:
            raw.close()
            raise
    finally:
        if home is not None:
            home.close()
    reader = VerifiedReader(
        raw,
        verifier=verifier,
        sha256=src.sha256,
        progress=Progress(src.artifact_type, src.length),
        name=name,
    )
    temps: list[Path] = []
    try:
        fd, tmp = _temp_in(opts.directory)
        temps.append(tmp)
        try:
            decoded = open_decompressed(reader) if target is not None else None
            with contextlib.closing(decoded if decoded is not None else reader):
                try:
                    if decoded is None:
                        reader.copy_into(fd)
                    else:
                        # Disk writeback runs alongside, leaving fsync() only the tail.
                        copy_to_fd(
                            decoded,
                            fd,
                            offset=0,
                            chunk=COPY_SIZE,
                            progress_cb=Writeback(fd).advance,
                        )
                except OSError as exc:
                    raise NestosError(f"writing {out}") from exc
                reader.finish()
            os.fsync(fd)
        finally:
            os.close(fd)
        sig_tmp: Path | None = None
        if sig is not None and not opts.decompress:
            sfd, sig_tmp = _temp_in(opts.directory)
            temps.append(sig_tmp)
            try:
                write_all(sfd, sig)
                os.fsync(sfd)
            finally:
                os.close(sfd)
        try:
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, out)
            temps.remove(tmp)
            if sig_tmp is not None:
                os.chmod(sig_tmp, 0o644 & ~_umask())
                try:
                    os.replace(sig_tmp, f"{out}.sig")
                except OSError:
                    out.unlink(missing_ok=True)
                    raise
                temps.remove(sig_tmp)
        except OSError as exc:
            raise NestosError(f"persisting output file to {out}") from exc
        _fsync_dir(opts.directory)
        return out
    finally:
        reader.close()
        for path in temps:
            path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sources_for(
    image_url: str | None,
    *,
    stream: str,
    architecture: str,
    platform: str,
    fmt: str,
    stream_base_url: str | None,
    retries: int | None,
    profile: Profile = DEFAULT,
) -> list[ImageSource]:
    """What `download` fetches: one URL, or the stream's artifacts for the selection."""
    if image_url:
        return [UrlSource(image_url, retries)]
    return stream_sources(
        stream, architecture, platform, fmt, stream_base_url, retries, profile=profile
    )
