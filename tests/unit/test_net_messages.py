"""Network failures as users read them, redirects that leave HTTPS, silent servers.

Real CLI subprocesses against real servers on 127.0.0.1 (plain, TLS, and a socket that
accepts and never answers); each case asserts the message, the exit code, that no
Python exception text leaks out and that nothing was written.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import Server, http_server
from tests.unit.test_download_tls import make_cert

PYTHONISMS = ("[Errno", "Connect call failed", "Expecting value", "Traceback", "All connection")


@pytest.fixture(params=["all", "none"], ids=["fast", "plain"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"NESTOS_INSTALLER_FAST_PATHS": str(request.param)}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    key, crt = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    with http_server(tls=ctx) as srv:
        yield srv, crt


def clean(err: str) -> None:
    for text in PYTHONISMS:
        assert text not in err, err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                accepted.append(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


# ---- messages without Python-isms


def test_unknown_host(out: Path, env: dict[str, str]) -> None:
    proc = run_cli("download", "-C", out, "-u", "http://nonexistent.invalid/x.raw.xz", env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Error: fetching 'http://nonexistent.invalid/x.raw.xz'" in err
    assert "could not resolve host 'nonexistent.invalid'" in err
    clean(err)
    assert os.listdir(out) == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_connection_refused(out: Path, env: dict[str, str], scheme: str) -> None:
    port = closed_port()
    url = f"{scheme}://127.0.0.1:{port}/x.raw.xz"
    proc = run_cli("download", "-C", out, "-u", url, env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert f"could not connect to 127.0.0.1 port {port}: connection refused" in err
    clean(err)
    assert os.listdir(out) == []


def test_stream_metadata_not_json(out: Path) -> None:
    with http_server() as srv:
        srv.add("/streams/stable.json", b"<html>not found</html>")
        proc = run_cli("list-stream", "--stream-base-url", srv.url("/streams/"))
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "decoding stream metadata" in err
    assert "not JSON" in err
    clean(err)


# ---- redirects


def test_https_image_redirected_to_http_is_refused(
    tls: tuple[Server, Path], out: Path, signing_key: SigningKey
) -> None:
    srv, crt = tls
    with http_server() as plain:
        plain.add("/img.raw.xz", b"downgraded bytes")
        plain.add("/img.raw.xz.sig", b"sig")
        srv.add("/img.raw.xz", None, redirect=plain.url("/img.raw.xz"))
        srv.add("/img.raw.xz.sig", None, redirect=plain.url("/img.raw.xz.sig"))
        url = srv.url("/img.raw.xz")
        proc = run_cli(
            "download", "-C", out, "--keyring", signing_key.public, "-u", url,
            env={"SSL_CERT_FILE": str(crt)},
        )  # fmt: skip
        assert plain.hits("/img.raw.xz") == [] or all(
            h.status == 200 for h in plain.hits("/img.raw.xz")
        )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert f"redirected to '{plain.url('/img.raw.xz')}': refusing to leave HTTPS" in err
    clean(err)
    assert os.listdir(out) == []


@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "insecure-ignition"])
def test_https_ignition_redirected_to_http(
    tls: tuple[Server, Path], tmp_path: Path, allowed: bool
) -> None:
    """HTTPS-or-hash applies where the redirect chain ends (checked in --dry-run too)."""
    srv, crt = tls
    image = tmp_path / "img.raw"
    image.write_bytes(bytes(1 << 20))
    target = tmp_path / "target.img"
    target.write_bytes(b"keep me")
    with http_server() as plain:
        plain.add("/config.ign", b'{"ignition": {"version": "3.4.0"}}')
        srv.add("/config.ign", None, redirect=plain.url("/config.ign"))
        extra = ["--insecure-ignition"] if allowed else []
        proc = run_cli(
            "install", target, "-f", image, "--insecure", "--dry-run",
            "--ignition-url", srv.url("/config.ign"), *extra,
            env={"SSL_CERT_FILE": str(crt)},
        )  # fmt: skip
    err = proc.stderr.decode()
    clean(err)
    assert target.read_bytes() == b"keep me"
    if allowed:
        assert "refusing to fetch Ignition config over HTTP" not in err
    else:
        assert proc.returncode == 1
        assert "Error: downloading source Ignition config" in err
        assert "refusing to fetch Ignition config over HTTP without --ignition-hash" in err


# ---- silent servers and failed fetches


def test_silent_server_fails_fast_after_the_signature(out: Path, env: dict[str, str]) -> None:
    """The signature request timed out: the image on the same server is not tried
    (no second wait), and waiting was announced while it lasted."""
    with silent_server() as (port, accepted):
        url = f"http://127.0.0.1:{port}/img.raw.xz"
        env = {**env, "NESTOS_INSTALLER_FETCH_TIMEOUT": "3"}
        proc = run_cli("download", "-C", out, "--insecure", "-u", url, env=env)
        connections = len(accepted)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Failed to fetch signature" in err
    assert "Waiting for 127.0.0.1 to answer" in err
    assert "not trying: the server did not answer the signature request in time" in err
    assert connections == 1  # the signature's; none for the image
    clean(err)
    assert os.listdir(out) == []


def test_bad_fetch_timeout_value(out: Path) -> None:
    proc = run_cli(
        "download", "-C", out, "-u", "http://127.0.0.1:9/x",
        env={"NESTOS_INSTALLER_FETCH_TIMEOUT": "soon"},
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "NESTOS_INSTALLER_FETCH_TIMEOUT" in err
    assert "expected seconds" in err
    clean(err)


def test_install_reports_the_image_fetch_not_the_signature(tmp_path: Path) -> None:
    """Neither image nor signature exist: the image's 404 is the error."""
    target = tmp_path / "target.img"
    target.write_bytes(b"keep me")
    with http_server() as srv:
        url = srv.url("/missing.raw.xz")
        proc = run_cli("install", target, "--image-url", url)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert f"fetching '{url}'" in err
    assert "HTTP 404" in err
    assert "signature not found" not in err
    clean(err)
    assert target.read_bytes() == b"keep me"
