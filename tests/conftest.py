"""Fixtures shared by every test area."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.helpers.gpgkey import SigningKey, make_key

REPO = Path(__file__).resolve().parents[1]


def upstream_dir() -> Path:
    env = os.environ.get("NESTOS_UPSTREAM_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "upstream"


@pytest.fixture(scope="session")
def upstream() -> Path:
    """The read-only upstream fixture tree; the compat suite skips visibly without it."""
    path = upstream_dir()
    if not path.is_dir():
        pytest.skip(f"upstream fixtures not found at {path} (set NESTOS_UPSTREAM_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    key = make_key(tmp_path_factory.mktemp("gpg"))
    yield key
    key.close()


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    """A second key that nobody trusts."""
    key = make_key(tmp_path_factory.mktemp("gpg-other"), name="untrusted key")
    yield key
    key.close()


def pytest_configure(config: pytest.Config) -> None:
    """Started as `cmd &` from a non-interactive shell, pytest inherits SIGINT ignored,
    and so would every process it starts (an ignored signal stays ignored across
    exec): the CLI under test, gpg. Tests that send SIGINT rely on its default action
    (Python's KeyboardInterrupt in our CLI, termination in gpg), so we set it here for
    the whole run, whatever the caller left us."""
    del config
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM (a CI timeout, a stopped session) and SIGHUP (a closed terminal) would
    # end the run on the spot, leaving loop devices and mounts behind; as an
    # interruption the fixtures and context managers release them first
    # (tests/helpers/loop.py). Only when they would otherwise kill us.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _interrupt)
    # Capture is suspended while plugins configure: fd 2 is the run's real stderr here,
    # where a repeated signal is reported even while a test's output is captured.
    if _stopping.stderr is None:
        _stopping.stderr = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    del config
    if _stopping.stderr is not None:
        os.close(_stopping.stderr)
        _stopping.stderr = None


class Terminated(KeyboardInterrupt):
    """The test run got SIGTERM or SIGHUP: stop like Ctrl-C, cleaning up."""


class _Stopping:
    """Whether the run is stopping (pytest called its keyboard-interrupt hook), and
    whether a repeated signal was reported already."""

    session = False
    told = False
    stderr: int | None = None


_stopping = _Stopping()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP interrupt the run. Repeats that arrive while it unwinds (a
    supervisor repeating its signal) would break off the cleanup that stops VMs and
    detaches loop devices, and chain traceback on traceback: they are only
    acknowledged, once, on the real stderr; pytest still ends as interrupted (exit 2).

    Unwinding means an interruption is in flight here (this thread is handling a
    KeyboardInterrupt: a test's `finally`, a context manager's exit) or pytest has
    begun stopping the session. A test that signals itself and catches the
    interruption leaves neither behind, so the next such test is interrupted too."""
    del frame
    name = signal.Signals(signum).name
    if not _stopping.session and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        raise Terminated(name)
    if not _stopping.told and _stopping.stderr is not None:
        _stopping.told = True
        line = f"\n{name} again: the test run is already stopping (cleaning up first)\n"
        os.write(_stopping.stderr, line.encode())


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """From here on, the session only cleans up (see _interrupt)."""
    del excinfo
    _stopping.session = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _signal_actions_stay() -> Iterator[None]:
    """Python ignores SIGPIPE; a test that lets the default action leak out would
    make the next EPIPE (a test server writing to a vanished client) kill pytest.
    In-process CLI runs must likewise give back SIGTERM/SIGHUP/SIGINT."""
    sigs = (signal.SIGPIPE, signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    before = {sig: signal.getsignal(sig) for sig in sigs}
    yield
    after = {sig: signal.getsignal(sig) for sig in sigs}
    for sig, handler in before.items():
        signal.signal(sig, handler)
    assert after == before, "a test changed a signal action of the test process"


@pytest.fixture(autouse=True)
def _no_proxy_from_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to their own 127.0.0.1 servers: a proxy set in the caller's
    environment must not reroute them (tests of proxies set their own)."""
    for var in (
        *("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"),
        *("all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"),
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True, scope="session")
def _no_host_trusted_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keys an administrator dropped into this machine's /etc/nestos-installer/keys.d
    (or a `make install`ed keys.d) must not change what the tests trust: point both
    key directories at empty ones, for in-process runs and subprocesses alike."""
    from nestos_inst import keydirs

    empty = tmp_path_factory.mktemp("no-keys")
    saved = {var: os.environ.get(var) for var in (keydirs.DIST_ENV, keydirs.ADMIN_ENV)}
    os.environ[keydirs.DIST_ENV] = str(empty / "dist")
    os.environ[keydirs.ADMIN_ENV] = str(empty / "admin")
    yield
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
