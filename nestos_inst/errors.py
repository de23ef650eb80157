"""One error hierarchy and the `Error: <chain>` rendering of docs/compat.md#error-format.

Every failure we report is a NestosError whose ``__cause__`` chain carries the
lower-level reasons, mirroring anyhow's context chains so messages match upstream.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator


class NestosError(Exception):
    """A runtime failure: exit status 1, printed as an error chain."""


class UsageError(NestosError):
    """Bad command-line input found after parsing (still exit 2, like clap)."""


class CommandError(NestosError):
    """An external command failed; its stderr is the cause."""


class FormatError(NestosError):
    """Malformed input media (ISO, cpio, GPT, osmet, JSON metadata...)."""


class VerifyError(NestosError):
    """Signature or digest verification failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP raised in the main thread, so that clean-up runs as for
    Ctrl-C: no temporary file, GnuPG home or half-written disk is left behind when
    systemd stops the service or the terminal goes away."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminating_signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into Terminated for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, _raise_terminated) for sig in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold off Ctrl-C, SIGTERM and SIGHUP (main thread only) while something must
    finish, such as resetting a partition table after a failure; they are dropped:
    the caller is already on its way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, *TERMINATING_SIGNALS)
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def data_problem(exc: BaseException) -> str | None:
    """A parse failure of the json module (or bad UTF-8, or absurd nesting) in the
    user's words (jsontext.py), None for anything else."""
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | RecursionError):
        from .jsontext import json_error_text

        return json_error_text(exc)
    return None


def describe(exc: BaseException) -> str:
    """Render one link the way Rust's std::io::Error does, so texts match upstream."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"{exc.strerror} (os error {exc.errno})"
    problem = data_problem(exc)
    if problem is not None:
        return problem
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "interrupted"
    text = str(exc)
    return text if text else type(exc).__name__


def _links(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its `__cause__` chain, outermost first (a cycle ends the walk)."""
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__


def chain(exc: BaseException) -> list[str]:
    """Messages from the outermost context to the innermost cause."""
    return [describe(link) for link in _links(exc)]


def flat_chain(exc: BaseException) -> str:
    """The chain on one line (`top: cause: ...`) for single-line reports such as
    argparse's `argument X: ...`; empty links are left out."""
    return ": ".join(text for text in map(str, _links(exc)) if text)


def format_chain(exc: BaseException) -> str:
    """`Error: top` plus a `Caused by:` section, numbered when there are 2+ causes."""
    msgs = chain(exc)
    text = f"Error: {msgs[0]}"
    causes = msgs[1:]
    if len(causes) == 1:
        text += "\n\nCaused by:\n    " + causes[0].replace("\n", "\n    ")
    elif causes:
        text += "\n\nCaused by:"
        for i, cause in enumerate(causes):
            text += f"\n    {i}: " + cause.replace("\n", "\n       ")
    return text


@contextlib.contextmanager
def context(message: str) -> Iterator[None]:
    """Wrap any failure inside the block as the cause of `message`."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        raise NestosError(message) from exc
