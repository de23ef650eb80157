"""Fixtures shared by every test area."""

from __future__ import annotations

import os
import signal
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


class Terminated(KeyboardInterrupt):
    """The test run got SIGTERM or SIGHUP: stop like Ctrl-C, cleaning up."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    del frame
    raise Terminated(signal.Signals(signum).name)


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
