"""Image sources shared by `install`, `download` and osmet (docs/compat.md#download, #signatures,
#image-source).

A source yields the artifact's bytes *as served* (compressed) plus its detached
signature; open_verified() wraps those bytes so the signature (and the stream's sha256,
when published) is checked over exactly what was read, without buffering or re-reading.
Decompression comes after, in the caller (nestos_inst.io.compress.open_decompressed).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import NestosError, VerifyError, chain, describe
from .io.kernel import Writeback
from .io.pipeline import write_all
from .profile import DEFAULT, Profile
from .progress import Progress
from .report import say, write
from .verify import FAILURE, StreamVerifier, VerifyResult

SIGNATURE_LIMIT = 1 << 20
READ_SIZE = 1 << 20


class SourceStream(Protocol):
    """An artifact's bytes as served: read() fills what was asked for (short only at
    the end), read1() returns whatever one read of the source gives."""

    def read(self, size: int = -1, /) -> bytes: ...

    def read1(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class ImageSource(Protocol):
    """One artifact to read. `filename`/`length` are final once open() returned."""

    artifact_type: str  # "disk", "kernel", "initramfs", "rootfs", ...
    filename: str  # last segment of the final URL / the file's name
    length: int | None  # length hint of the served bytes
    description: str  # the location message(s) to print on stderr before reading
    sha256: str | None  # published digest of the served bytes, if any

    def open(self) -> SourceStream:
        """The bytes as served (compressed). Caller closes."""
        ...

    def signature(self) -> bytes | None:
        """Detached signature bytes; None when absent (messages already printed)."""
        ...


@runtime_checkable
class KernelMove(Protocol):
    """A fast path a served stream may offer (plain-HTTP responses do): move the body
    into `fd` and the pipes `taps` inside the kernel. See HttpResponse.move_to."""

    def move_to(
        self,
        fd: int,
        taps: Sequence[int],
        first: Callable[[bytes], None],
        moved: Callable[[int], None],
    ) -> bool: ...


class ImageReader(Protocol):
    """What install streams an image through (open_verified(), or a counting reader
    for trusted sources): the bytes as served, finish() after EOF to complete the
    checks, close() always. It is an io `Source`, so the decompress stage
    (open_decompressed) reads it as it is."""

    def read(self, size: int = -1, /) -> bytes: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


class FileSource:
    """A local image; its signature is `<path>.sig` beside it."""

    artifact_type = "disk"
    sha256: str | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.filename = self.path.name
        self.length: int | None = None
        self.sig_path = Path(f"{os.fspath(path)}.sig")
        self.description = f"Copying image from {self.path}\nReading signature from {self.sig_path}"

    def open(self) -> SourceStream:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - returned to the caller
        except OSError as exc:
            raise NestosError(f"opening {self.path}") from exc
        self.length = os.fstat(f.fileno()).st_size
        return f

    def signature(self) -> bytes | None:
        try:
            with open(self.sig_path, "rb") as f:
                data = f.read(SIGNATURE_LIMIT + 1)
        except OSError as exc:
            say(f"Couldn't read signature file: {describe(exc)}")
            return None
        if len(data) > SIGNATURE_LIMIT:
            say("Couldn't read signature file: file too large")
            return None
        return data


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname or "", parts.port
    except ValueError:
        return "", url, None


def _links(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__
    return out


def signature_url(url: str) -> str:
    """`.sig` appended to the URL's path; a query string stays after it."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise NestosError(f"invalid URL '{url}'") from exc
    return urlunsplit(parts._replace(path=parts.path + ".sig"))


def url_filename(url: str) -> str:
    """Last path segment of `url`, refusing anything that is not a plain file name."""
    try:
        segment = urlsplit(url).path.rsplit("/", 1)[-1]
    except ValueError as exc:
        raise NestosError(f"invalid URL '{url}'") from exc
    name = unquote(segment)
    if name in ("", ".", "..") or "/" in name or "\0" in name or "\\" in name:
        raise NestosError(f"couldn't determine a file name from URL '{url}'")
    return name


class UrlSource:
    """An image fetched over HTTP(S) with its detached signature beside it."""

    def __init__(
        self,
        url: str,
        fetch_retries: int | None = 0,
        *,
        sig_url: str | None = None,
        artifact_type: str = "disk",
        sha256: str | None = None,
        description: str | None = None,
    ) -> None:
        self.url = url
        self.fetch_retries = fetch_retries
        self.sig_url = sig_url if sig_url is not None else signature_url(url)
        self.artifact_type = artifact_type
        self.sha256 = sha256
        self.filename = url_filename(url)
        self.length: int | None = None
        self.description = description or (
            f"Downloading image from {url}\nDownloading signature from {self.sig_url}"
        )
        self._sig: bytes | None = None
        self._sig_fetched = False
        self._sig_silent = False  # the signature fetch timed out

    def open(self) -> SourceStream:
        if self._sig_silent and _origin(self.sig_url) == _origin(self.url):
            # A server that let the signature request time out would make us wait
            # as long again for the image: say so now instead.
            raise NestosError(f"fetching '{self.url}'") from NestosError(
                "not trying: the server did not answer the signature request in time"
            )
        from .net import http  # httpx and asyncio: only when a URL is fetched

        resp = http.fetch(self.url, retries=self.fetch_retries)
        if resp.status != 200:
            resp.close()
            raise NestosError(f"image fetch failed: {resp.status} {resp.reason}".rstrip())
        try:
            self.filename = url_filename(resp.url)
            self.length = resp.length
        except BaseException:
            resp.close()
            raise
        return resp

    def signature(self) -> bytes | None:
        if not self._sig_fetched:
            self._sig_fetched = True
            self._sig = self._fetch_signature()
        return self._sig

    def _fetch_signature(self) -> bytes | None:
        from .net import http

        try:
            try:
                resp, body = http.fetch_bytes(
                    self.sig_url, retries=self.fetch_retries, limit=SIGNATURE_LIMIT
                )
            except NestosError as exc:
                self._sig_silent = any(isinstance(link, http.TimedOut) for link in _links(exc))
                raise NestosError("fetching signature URL") from exc
            if resp.status != 200:
                raise NestosError("fetching signature URL") from NestosError(
                    f"HTTP {resp.status} {resp.reason}".rstrip()
                )
            return body
        except NestosError as exc:
            msgs = chain(exc)
            text = f"Failed to fetch signature: {msgs[0]}"
            if len(msgs) > 1:
                text += "\n\nCaused by:" + "".join(
                    f"\n    {i}: {m}" if len(msgs) > 2 else f"\n    {m}"
                    for i, m in enumerate(msgs[1:])
                )
            say(text)
            return None


def stream_sources(  # noqa: PLR0917 - the shared interface takes them positionally
    stream: str,
    architecture: str,
    platform: str,
    fmt: str,
    base_url: str | None,
    fetch_retries: int | None = 0,
    *,
    profile: Profile = DEFAULT,
) -> list[ImageSource]:
    """Every artifact of (arch, platform, format), sorted by artifact type.

    `base_url=None` means the profile's default base and the "<OS> <stream> ..."
    wording; each source's description is the stream-level message.
    """
    # pydantic is slow to import: only stream metadata needs it.
    from .net.stream import Selection, fetch_stream

    sel = Selection(
        stream=stream,
        architecture=architecture,
        platform=platform,
        fmt=fmt,
        base_url=base_url if base_url is not None else profile.stream_base_url,
        custom_base=base_url is not None,
    )
    meta = fetch_stream(sel.url, retries=fetch_retries)
    artifacts = meta.artifacts(architecture, platform, fmt)
    text = sel.description(profile.os_name)
    return [
        UrlSource(
            art.location,
            fetch_retries,
            sig_url=art.signature,
            artifact_type=kind,
            sha256=art.sha256.lower() if art.sha256 else None,
            description=text,
        )
        for kind, art in sorted(artifacts.items())
    ]


class VerifiedReader:
    """The source's bytes, fed on the fly to GPG, sha256 and progress.

    Read it to the end, then call finish(): it drains anything left (so GPG always
    sees the whole artifact), forwards gpg-like status lines to the reporter and raises
    VerifyError when the signature or the sha256 does not match.
    """

    def __init__(
        self,
        raw: SourceStream,
        *,
        verifier: StreamVerifier | None,
        sha256: str | None,
        progress: Progress | None,
        name: str = "image",
    ) -> None:
        self._raw = raw
        self._verifier = verifier
        self._want_sha = sha256
        self._hash = hashlib.sha256() if sha256 else None
        self._progress = progress
        self._name = name
        self._eof = False
        self.result: VerifyResult | None = None
        self.bytes_read = 0
        self.closed = False

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(READ_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        if self._eof or size == 0:
            return b""
        return self._took(self._raw.read(size))

    def read1(self, size: int = -1, /) -> bytes:
        """Whatever one read of the source gives (no re-assembly copy): for copy_to_fd."""
        if size < 0:
            size = READ_SIZE
        if self._eof or size == 0:
            return b""
        return self._took(self._raw.read1(size))

    def _took(self, data: bytes) -> bytes:
        """Account for what a read of the source returned; b"" marks the end."""
        if not data:
            self._eof = True
            return b""
        self._account(data)
        return data

    def copy_into(self, fd: int) -> None:
        """Write the rest of the source to `fd` (sequentially, at its file position).

        A source that can (plain-HTTP responses: HttpResponse.move_to) has the kernel
        move the bytes into `fd` and, with tee, into GPG's pipe and a hashing thread's
        pipe: the image never passes through Python. Otherwise, or after a broken
        transfer was resumed, plain reads and writes finish the job. Dirty pages are
        pushed to disk as the file grows (Writeback) so the caller's fsync is short.
        """
        writeback = Writeback(fd)
        raw = self._raw
        if isinstance(raw, KernelMove) and not self._eof and self.bytes_read == 0:
            hasher = _PipeHash(self._hash) if self._hash is not None else None
            try:
                taps = [self._verifier.tap() if self._verifier else None]
                taps.append(hasher.tap if hasher is not None else None)

                def first(data: bytes) -> None:
                    self._account(data)
                    write_all(fd, data)
                    writeback.advance(len(data))

                def moved(n: int) -> None:
                    self.bytes_read += n
                    if self._progress is not None:
                        self._progress.add(n)
                    writeback.advance(n)

                raw.move_to(fd, [t for t in taps if t is not None], first, moved)
            finally:
                if hasher is not None:
                    hasher.close()  # all tapped bytes hashed before any read below
        while data := self.read1(READ_SIZE):
            write_all(fd, data)
            writeback.advance(len(data))

    def _account(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._verifier is not None:
            self._verifier.update(data)
        if self._hash is not None:
            self._hash.update(data)
        if self._progress is not None:
            self._progress.add(len(data))

    def finish(self) -> None:
        """Check everything after EOF; raises VerifyError on any mismatch."""
        while not self._eof:
            self.read(READ_SIZE)
        if self._progress is not None:
            self._progress.finish()
        if self._verifier is not None:
            result = self._verifier.finish()
            self.result = result
            if result.status_text:
                write(result.status_text)
            if not result.ok:
                raise VerifyError(FAILURE) from VerifyError(result.reason or "bad signature")
        if self._hash is not None and self._want_sha is not None:
            got = self._hash.hexdigest()
            if got != self._want_sha:
                raise VerifyError(f"sha256 mismatch for {self._name}") from VerifyError(
                    f"computed '{got}' but stream metadata says '{self._want_sha}'"
                )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._verifier is not None:
                self._verifier.close()
        finally:
            self._raw.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Digest(Protocol):
    """What _PipeHash feeds: a hashlib object."""

    def update(self, data: bytes | memoryview, /) -> None: ...


class _PipeHash:
    """A thread hashing whatever arrives on a pipe (a tap of Fanout)."""

    def __init__(self, digest: Digest) -> None:
        self._digest = digest
        r, self.tap = os.pipe()
        self._source = os.fdopen(r, "rb", buffering=0)
        self._thread = threading.Thread(target=self._work, name="sha256", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        while n := self._source.readinto(buf):
            self._digest.update(view[:n])  # releases the GIL for large buffers

    def close(self) -> None:
        """Wait until everything written so far is hashed."""
        os.close(self.tap)
        self._thread.join()
        self._source.close()


def open_verified(
    source: ImageSource,
    *,
    insecure: bool,
    keyrings: Sequence[Path] = (),
    progress: Progress | None = None,
    signature: bytes | None = None,
    profile: Profile = DEFAULT,
) -> VerifiedReader:
    """Open `source` with its checks attached (signature required unless `insecure`).

    `keyrings` are the --keyring files, trusted after `profile`'s key directories.
    `insecure` skips verification entirely, even of a signature that is there.
    Pass `signature` when the caller already fetched it (download's skip check);
    otherwise source.signature() is called here, before the image is opened.
    """
    from .deps import require
    from .keydirs import INSECURE_SKIP, require_trusted_keys

    sig = signature if signature is not None else source.signature()
    verifier: StreamVerifier | None = None
    if sig is None:
        if not insecure:
            # When the image cannot be fetched either, that is the error to report.
            source.open().close()
            raise NestosError("--insecure not specified and signature not found")
        say("Signature not found; skipping verification as requested")
    elif insecure:
        say(INSECURE_SKIP)
    else:
        keys = require_trusted_keys(profile, keyrings)
        require("gpg")
        verifier = StreamVerifier(sig, keys)
    try:
        raw = source.open()
    except BaseException:
        if verifier is not None:
            verifier.close()
        raise
    if progress is not None and progress.total is None and source.length:
        progress.total = source.length
    return VerifiedReader(
        raw, verifier=verifier, sha256=source.sha256, progress=progress, name=source.filename
    )
