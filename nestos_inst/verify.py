"""Detached OpenPGP signature checks with GPGME, streamed (docs/compat.md#signatures).

Each verification gets its own throw-away GnuPG home (0700) holding only the trusted
keys (found by keydirs.py: the profile's key directories plus any ``--keyring``
files). The signed data is fed to GPGME through a pipe read by a helper thread, so the
image is never held in memory nor re-read from disk; the gpg engine process does the
hashing on the other core. A signature counts as good when GPGME
reports no error for it and its signing (sub)key belongs to a trusted key; key
validity is deliberately ignored (imported keys are "unknown" to the web of trust).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fastpaths
from .errors import NestosError, VerifyError
from .io.files import KEYRING_LIMIT, read_limited
from .run import run

FAILURE = "GPG verification failure"
ENGINE_DIED = "gpg exited before it had read all the data"

# Pipe buffer between the feeder and GPGME (the only data held for GPG).
PIPE_SIZE = 1 << 20
GPGME_IO_BUFFER = 64 << 10
# gpg hashes hundreds of MB/s: when our pipe takes no byte for this long, or GPGME
# does not end this long after the input did, the engine is taken as gone.
STALL_SECONDS = 30.0
# Sooner when the GPGME thread burns CPU all that while without reading: the known
# failure (GPGME 1.18 polling the pipe of a gpg that died, forever).
SPIN_SECONDS = 2.0
# Signals a terminal or service manager sends to the whole process group.
_GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
# After cancelling a stuck operation, how long to wait for GPGME to return.
CANCEL_GRACE = 5.0


def trusted_key_files(extra: Iterable[Path] = ()) -> list[Path]:
    """The key files to trust, as given: callers resolve them with keydirs."""
    return [Path(p) for p in extra]


@dataclass(frozen=True)
class SignatureReport:
    """What GPGME said about one signature, rendered like gpg's own stderr."""

    good: bool
    fpr: str
    timestamp: int
    algo: str
    uid: str | None
    problem: str | None

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.timestamp:
            made = time.strftime("%a %b %d %H:%M:%S %Y UTC", time.gmtime(self.timestamp))
            out.append(f"gpg: Signature made {made}")
        algo = "" if self.algo == "UNKNOWN" else f"{self.algo} "
        out.append(f"gpg:                using {algo}key {self.fpr}")
        who = f'"{self.uid}"' if self.uid else self.fpr
        if self.good:
            out.append(f"gpg: Good signature from {who}")
        elif self.problem == "no public key":
            out.append("gpg: Can't check signature: No public key")
        else:
            extra = f" ({self.problem})" if self.problem else ""
            out.append(f"gpg: BAD signature from {who}{extra}")
        return out


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    signatures: tuple[SignatureReport, ...]
    reason: str | None  # why it failed (None when ok)

    @property
    def status_text(self) -> str:
        """gpg-like lines for stderr (empty when GPGME found no signature at all)."""
        lines = [line for sig in self.signatures for line in sig.lines()]
        return "".join(line + "\n" for line in lines)


_ENGINE_LOCK = threading.Lock()
_ENGINE_SET: list[bool] = []


def _name_engine() -> None:
    """Tell GPGME which gpg to run instead of letting it ask gpgconf (fast path
    `gpgconf`, once per process, before the first context).

    To find its engines GPGME otherwise runs `gpgconf --list-dirs`, `gpgconf
    --list-components`, `gpgconf --version` and `gpgsm --version` on every start: four
    processes (a sixth of a small install's CPU) for answers we do not use, as every
    context gets its own home directory and no agent is involved. The gpg named is the
    one on PATH (deps.require("gpg") checked it), through GPGME's documented global
    flags `gpg-name` and `disable-gpgconf`.
    """
    if not fastpaths.enabled("gpgconf"):
        return
    with _ENGINE_LOCK:
        if _ENGINE_SET:
            return
        _ENGINE_SET.append(True)
        path = shutil.which("gpg")
        if path is None:
            return  # GPGME's own search then reports what is missing
        from gpg import gpgme

        if gpgme.gpgme_set_global_flag("gpg-name", path) == 0:
            gpgme.gpgme_set_global_flag("disable-gpgconf", "1")


class GpgHome:
    """A private GnuPG home with the trusted keys imported; remove with close()."""

    def __init__(self, key_files: Sequence[Path]) -> None:
        import gpg

        _name_engine()

        self.path = Path(tempfile.mkdtemp(prefix="nestos-installer-"))
        os.chmod(self.path, 0o700)
        # Public-key import and verification need no agent: don't spawn one per check.
        (self.path / "gpg.conf").write_text("no-autostart\n")
        try:
            # Two gpg runs (`gpg --version`: GPGME's engine check, then again for the
            # home directory), one per key file, one listing; verify() runs the last.
            self.ctx: Any = gpg.Context(home_dir=str(self.path), offline=True)
            self.trusted: set[str] = set()
            self._uids: dict[str, str] = {}
            imported: list[str] = []
            for key_file in key_files:
                imported += self._import(key_file)
            self._learn(imported)
        except BaseException:
            self.close()
            raise

    def _import(self, key_file: Path) -> list[str]:
        """Import one key file; the fingerprints of the keys it brought."""
        import gpg

        blob = read_limited(key_file, KEYRING_LIMIT, message=f"reading keyring {key_file}")
        try:
            result = self.ctx.key_import(blob)
        except gpg.errors.GPGMEError as exc:
            raise NestosError(f"importing keyring {key_file}") from NestosError(str(exc))
        imports = getattr(result, "imports", None) or []
        fprs = [imp.fpr.upper() for imp in imports if imp.fpr]
        if not fprs:
            raise NestosError(f"no OpenPGP public key found in {key_file}")
        return fprs

    def _learn(self, fprs: Sequence[str]) -> None:
        """Trust every subkey of the imported keys and remember their user IDs.

        One listing of this home (it holds nothing but what we imported) on our own
        context, rather than a get_key() per key: each of those clones the context,
        and GPGME runs `gpg --version` for every clone before the listing itself.
        """
        wanted = set(fprs)
        for key in self.ctx.keylist():
            if (key.fpr or "").upper() not in wanted:
                continue
            # Signatures name the signing subkey; trust every subkey of a trusted key.
            subkeys = [sub.fpr.upper() for sub in key.subkeys if sub.fpr]
            self.trusted.update(subkeys)
            if key.uids:  # remembered now: asking later would run gpg once more
                self._uids.update(dict.fromkeys(subkeys, str(key.uids[0].uid)))

    def uid_of(self, fpr: str) -> str | None:
        if fpr in self._uids:
            return self._uids[fpr]
        with contextlib.suppress(Exception):
            key = self.ctx.get_key(fpr)
            if key.uids:
                return str(key.uids[0].uid)
        return None

    def judge(self, result: Any) -> VerifyResult:
        """Good = at least one signature, every one error-free and by a trusted key."""
        import gpg

        reports: list[SignatureReport] = []
        reason: str | None = None
        sigs = list(getattr(result, "signatures", None) or [])
        if not sigs:
            reason = "no signature found"
        elif not self.trusted:
            reason = "no trusted keys: pass --keyring FILE"
        for sig in sigs:
            fpr = (sig.fpr or "").upper()
            problem: str | None = None
            if sig.status != gpg.errors.NO_ERROR:
                code = gpg.errors.GPGMEError(sig.status).getcode()
                problem = "no public key" if code == gpg.errors.NO_PUBKEY else "bad signature"
            elif fpr not in self.trusted:
                problem = "signing key not trusted"
            if problem and reason is None:
                reason = problem
            algo = gpg.core.pubkey_algo_name(sig.pubkey_algo) or "unknown"
            reports.append(
                SignatureReport(
                    good=problem is None,
                    fpr=fpr,
                    timestamp=int(sig.timestamp or 0),
                    algo=algo.upper(),
                    uid=self.uid_of(fpr) if fpr else None,
                    problem=problem,
                )
            )
        return VerifyResult(ok=reason is None, signatures=tuple(reports), reason=reason)

    def close(self) -> None:
        # Importing keys may start a gpg-agent in the home: stop it before removing.
        if any(self.path.glob("S.*")):
            run(["gpgconf", "--homedir", self.path, "--kill", "all"], check=False)
        # After an abort, a gpg that GPGME spawned (and never waits for) may still be
        # starting and drop a lock file in here; it exits once it finds its pipes
        # closed, so try again for a little while rather than leave the home behind.
        deadline = time.monotonic() + 3.0
        while True:
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists() or time.monotonic() > deadline:
                return
            time.sleep(0.05)


class PreparedHome:
    """A GpgHome being built on a helper thread (GPGME start-up plus key import take
    noticeable time), so that it overlaps with fetching the signature."""

    def __init__(self, keyrings: Sequence[Path] = ()) -> None:
        self._home: GpgHome | None = None
        self._error: BaseException | None = None
        self._taken = False
        files = trusted_key_files(keyrings)
        self._thread = threading.Thread(target=self._build, args=(files,), daemon=True)
        self._thread.start()

    def _build(self, files: list[Path]) -> None:
        try:
            self._home = GpgHome(files)
        except BaseException as exc:
            self._error = exc

    def take(self) -> GpgHome:
        """The home (raising what building it raised); the caller must close it."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._home is not None and not self._taken
        self._taken = True
        return self._home

    def close(self) -> None:
        """Remove the home unless it was taken."""
        self._thread.join()
        if self._home is not None and not self._taken:
            self._taken = True
            self._home.close()


def _large_io_buffer(data: Any) -> None:
    """Let GPGME move data to gpg in 64 KiB steps instead of its default 4 KiB.

    With 4 KiB, GPGME's poll/copy loop is the slowest stage of a download; larger
    than gpg's 64 KiB pipe is worse again (GPGME memmove()s the rest of its buffer
    after each partial write). A documented data flag of GPGME >= 1.15; older
    versions keep their default.
    """
    from gpg import gpgme

    with contextlib.suppress(Exception):
        gpgme.gpgme_data_set_flag(data.wrapped, "io-buffer-size", str(GPGME_IO_BUFFER))


class StreamVerifier:
    """Check a detached signature over bytes given piecewise with update().

    The bytes go through a pipe we own (both ends) to a GPGME data object backed by
    its read end, consumed by a helper thread running ``op_verify`` (GPGME releases
    the GIL), so the feeder only pays for an ``os.write`` per chunk and never holds
    more than the pipe buffer. finish() returns the VerifyResult (never raises for a
    bad signature: callers decide how loud to be); close() aborts and cleans up. One
    feeder thread at a time.

    Never hanging when gpg dies: gpg is started with the group's terminating
    signals blocked (inherited from the worker thread), so Ctrl-C does not kill it
    behind GPGME's back. For any other death, everything is watched from our side of
    the pipe: GPGME usually notices by itself (EPIPE, then no signature); should it
    stop reading without ending, our pipe stays full: the feeder (update(), or
    Fanout's tee) gives up after STALL_SECONDS without progress (sooner when the
    worker thread spins), and finish() gives GPGME as long after the input ended,
    then cancels it (gpgme_cancel_async) and reports ENGINE_DIED. No descriptor of
    GPGME's is touched; a GPGME loop that ignores the cancel is left behind on its
    daemon thread (the command then fails and the process exits).
    """

    def __init__(
        self,
        signature: bytes,
        keyrings: Sequence[Path] = (),
        *,
        home: GpgHome | None = None,
    ) -> None:
        """`home` (from PreparedHome) is owned from here on; else one is made now."""
        self._home = home if home is not None else GpgHome(trusted_key_files(keyrings))
        self._signature = signature
        self._result: VerifyResult | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._eof = False
        self._stalled = False
        self._done = threading.Event()
        try:
            self._rfd, self._wfd = os.pipe()
        except BaseException:
            self._home.close()
            raise
        with contextlib.suppress(OSError):  # bigger pipe = fewer wake-ups (Linux only)
            fcntl.fcntl(self._wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(self._wfd, False)  # update() waits with a bound (wait_room)
        self._thread = threading.Thread(target=self._work, name="gpg-verify", daemon=True)
        self._thread.start()

    # -- feeder side
    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise ValueError("update() after finish()")
        view = memoryview(data)
        while view and not self._stalled:
            try:
                n = os.write(self._wfd, view)
            except BlockingIOError:
                self.wait_room()
                continue
            except BrokenPipeError:
                return  # the worker gave up early (unusable signature): result says so
            view = view[n:]

    def wait_room(self) -> bool:
        """Wait until the pipe takes bytes again; False (and the input is dropped)
        when it took none for STALL_SECONDS (after the worker ended it drains the
        pipe, so only a GPGME that stopped reading without ending gets here)."""
        poller = select.poll()
        poller.register(self._wfd, select.POLLOUT)
        watch = _Spin(self._thread)
        while not self._stalled:
            if poller.poll(250):
                return True
            if watch.stuck():
                self._stalled = True
        return False

    def tap(self) -> int | None:
        """The pipe GPG reads (non-blocking), for a kernel-side copy (tee); None once
        input ended. Whoever writes it must do so in order with update(), call
        wait_room() on EAGAIN and handle EPIPE."""
        return None if self._eof or self._stalled else self._wfd

    def _end_input(self) -> None:
        if not self._eof:
            self._eof = True
            os.close(self._wfd)

    def _join(self) -> None:
        """Wait for the worker; cancel GPGME if it does not end by itself."""
        watch = _Spin(self._thread)
        while self._thread.is_alive() and not watch.stuck():
            self._thread.join(0.25)
        if self._thread.is_alive():
            self._stalled = True
            self._cancel()
            self._thread.join(CANCEL_GRACE)

    def finish(self) -> VerifyResult:
        self._end_input()
        self._join()
        stuck = self._thread.is_alive()
        self._cleanup()
        if stuck or self._stalled:
            return VerifyResult(False, (), ENGINE_DIED)
        if self._error is not None:
            return VerifyResult(False, (), f"gpgme: {self._error}")
        assert self._result is not None
        return self._result

    def close(self) -> None:
        """Abort (idempotent): end the input, cancel, wait for the worker, clean up.

        Cancelling lets an abort (Ctrl-C) end at once instead of waiting for gpg to
        hash what is still buffered.
        """
        if self._closed:
            return
        self._end_input()
        self._cancel()
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                self._thread.join(STALL_SECONDS + CANCEL_GRACE)
                break
            except KeyboardInterrupt as exc:  # a second Ctrl-C: still leave no home
                interrupted = exc
        self._cleanup()
        if interrupted is not None:
            raise interrupted

    def _cleanup(self) -> None:
        if not self._closed:
            self._closed = True
            self._home.close()

    # -- worker side
    def _work(self) -> None:
        import gpg

        source = os.fdopen(self._rfd, "rb", buffering=0)
        try:
            # gpg inherits this thread's signal mask: Ctrl-C or a service stop sent
            # to the whole process group then reaches only us, and our clean-up ends
            # gpg through its input (EOF/cancel) instead of a dying engine that GPGME
            # may never notice. Signals still reach the main thread as before.
            signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)
            ctx = self._home.ctx
            signed = gpg.Data(file=source)
            _large_io_buffer(signed)
            try:
                # Both data objects must outlive the asynchronous operation.
                signature = gpg.Data(self._signature)
                ctx.op_verify_start(signature, signed, None)
                ctx.wait(True)
            except gpg.errors.GPGMEError as exc:
                # Malformed signature packets end here, possibly before all data was read.
                self._result = VerifyResult(False, (), f"unusable signature: {exc}")
            else:
                self._result = self._home.judge(ctx.op_verify_result())
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()
            # Swallow what the feeder still sends (no EPIPE/SIGPIPE surprises for it).
            with contextlib.suppress(OSError):
                while source.read(PIPE_SIZE):
                    pass
            source.close()

    def _cancel(self) -> None:
        from gpg import gpgme

        with contextlib.suppress(Exception):
            gpgme.gpgme_cancel_async(self._home.ctx.wrapped)


class _Spin:
    """Tells a worker that makes no progress: STALL_SECONDS of waiting, or
    SPIN_SECONDS in which the thread was on the CPU half the time or more (measured
    with its own CPU clock: our thread, a POSIX interface)."""

    def __init__(self, thread: threading.Thread) -> None:
        self._start = time.monotonic()
        self._clock: int | None = None
        with contextlib.suppress(AttributeError, OSError, TypeError):
            self._clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
        self._mark = (self._start, self._cpu())

    def _cpu(self) -> float:
        if self._clock is None:
            return 0.0
        try:
            return time.clock_gettime(self._clock)
        except OSError:  # the thread has ended
            self._clock = None
            return 0.0

    def stuck(self) -> bool:
        now, cpu = time.monotonic(), self._cpu()
        if now - self._start > STALL_SECONDS:
            return True
        since, cpu_then = self._mark
        if now - since >= SPIN_SECONDS:
            if self._clock is not None and cpu - cpu_then >= 0.5 * (now - since):
                return True
            self._mark = (now, cpu)
        return False


def verify_stream(
    chunks: Iterable[bytes], signature: bytes, keyrings: Sequence[Path] = ()
) -> VerifyResult:
    verifier = StreamVerifier(signature, keyrings)
    try:
        for chunk in chunks:
            verifier.update(chunk)
        return verifier.finish()
    finally:
        verifier.close()


def verify_file(
    path: Path, signature: bytes, keyrings: Sequence[Path] = (), *, chunk: int = 1 << 20
) -> VerifyResult:
    """Verify an already-present file (download's skip-if-present check).

    One reused buffer: update() has written a chunk into the pipe before it returns.
    """
    verifier = StreamVerifier(signature, keyrings)
    try:
        buf = bytearray(chunk)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                verifier.update(view[:n])
        return verifier.finish()
    finally:
        verifier.close()


def require(result: VerifyResult) -> None:
    """Raise the upstream error for a failed verification, with our reason as cause."""
    if not result.ok:
        raise VerifyError(FAILURE) from VerifyError(result.reason or "bad signature")
