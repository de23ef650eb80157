"""Proxy variables, through a real proxy (tinyproxy on 127.0.0.1, started here).

Images, signatures and stream metadata go through the proxy the environment names
(plain forwarding for http://, CONNECT for https://); NO_PROXY hosts bypass it and keep
the plain-HTTP fast path. Every case runs with the speed tricks on and off.
tests/conftest.py clears the caller's proxy variables; each test sets its own.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nestos_inst.net.transport import bypassed, proxy_for
from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import Server, http_server
from tests.helpers.proxy import Proxy, tinyproxy
from tests.unit.test_download_tls import make_cert

DATA = os.urandom(1 << 20) + b"proxied image end"


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    d = tmp_path / "proxy"
    d.mkdir()
    with tinyproxy(d) as p:
        yield p


@pytest.fixture
def server() -> Iterator[Server]:
    with http_server() as srv:
        yield srv


@pytest.fixture(params=["all", "none"], ids=["fast", "plain"])
def fast(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def publish(server: Server, tmp_path: Path, key: SigningKey) -> str:
    (tmp_path / "served").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    path = tmp_path / "served" / "img.raw.xz"
    path.write_bytes(DATA)
    server.add("/img.raw.xz", path)
    server.add("/img.raw.xz.sig", key.sign(path))
    return server.url("/img.raw.xz")


def download(
    url: str, out: Path, key: SigningKey, fast: str, env: dict[str, str], *args: str
) -> tuple[int, str]:
    full = {**env, "NESTOS_INSTALLER_FAST_PATHS": fast}
    proc = run_cli("download", "-C", out, "--keyring", key.public, *args, "-u", url, env=full)
    return proc.returncode, proc.stderr.decode()


@pytest.mark.parametrize("var", ["http_proxy", "HTTP_PROXY", "all_proxy"])
def test_http_image_and_signature_go_through_proxy(  # noqa: PLR0917 - fixtures
    proxy: Proxy, server: Server, tmp_path: Path, signing_key: SigningKey, fast: str, var: str
) -> None:
    url = publish(server, tmp_path, signing_key)
    rc, err = download(url, tmp_path / "out", signing_key, fast, {var: proxy.url})
    assert rc == 0, err
    assert (tmp_path / "out" / "img.raw.xz").read_bytes() == DATA
    seen = proxy.requests()
    assert f"GET {url}.sig HTTP/1.1" in seen
    assert f"GET {url} HTTP/1.1" in seen
    assert len(server.hits("/img.raw.xz")) == 1


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", ".0.0.1", "*", "127.0.0.0/8", "foo,127.0.0.1"])
def test_no_proxy_hosts_bypass_it(
    proxy: Proxy, server: Server, tmp_path: Path, signing_key: SigningKey, no_proxy: str
) -> None:
    url = publish(server, tmp_path, signing_key)
    env = {"http_proxy": proxy.url, "NO_PROXY": no_proxy}
    rc, err = download(url, tmp_path / "out", signing_key, "all", env)
    assert rc == 0, err
    assert (tmp_path / "out" / "img.raw.xz").read_bytes() == DATA
    assert proxy.requests() == []


def test_https_uses_connect(
    proxy: Proxy, tmp_path: Path, signing_key: SigningKey, fast: str
) -> None:
    key, crt = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    with http_server(tls=ctx) as srv:
        url = publish(srv, tmp_path, signing_key)
        env = {"https_proxy": proxy.url, "SSL_CERT_FILE": str(crt)}
        rc, err = download(url, tmp_path / "out", signing_key, fast, env)
    assert rc == 0, err
    assert (tmp_path / "out" / "img.raw.xz").read_bytes() == DATA
    port = url.split(":")[2].split("/")[0]
    assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in proxy.requests()


def test_stream_metadata_goes_through_proxy(
    proxy: Proxy, server: Server, tmp_path: Path, fast: str
) -> None:
    server.add(
        "/streams/stable.json",
        b'{"stream": "stable", "metadata": {"last-modified": "2026-01-01T00:00:00Z"},'
        b' "architectures": {}}',
    )
    full = {"http_proxy": proxy.url, "NESTOS_INSTALLER_FAST_PATHS": fast}
    base = server.url("/streams/")
    proc = run_cli("list-stream", "--stream-base-url", base, env=full)
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"GET {base}stable.json HTTP/1.1" in proxy.requests()


def test_dead_proxy_is_reported_as_such(tmp_path: Path, signing_key: SigningKey) -> None:
    """A proxy that refuses: the error names the fetch and says the connection failed."""
    with http_server() as srv:
        url = publish(srv, tmp_path, signing_key)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        rc, err = download(url, tmp_path / "out", signing_key, "all", {"http_proxy": dead})
        assert srv.hits("/img.raw.xz") == []
    assert rc == 1
    assert f"could not connect to proxy {dead}: connection refused" in err, err
    assert "Traceback" not in err and "[Errno" not in err
    assert not (tmp_path / "out" / "img.raw.xz").exists()


# ---- the rules themselves


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "expected"),
    [
        ("example.com", None, "example.com", True),
        ("a.example.com", None, "example.com", True),
        ("a.example.com", None, ".example.com", True),
        ("badexample.com", None, "example.com", False),
        ("example.com", 8080, "example.com:8080", True),
        ("example.com", 80, "example.com:8080", False),
        ("10.1.2.3", None, "10.0.0.0/8", True),
        ("11.1.2.3", None, "10.0.0.0/8", False),
        ("::1", None, "::1", True),
        ("anything", None, " * ", True),
        ("example.com", None, "", False),
    ],
)
def test_no_proxy_matching(host: str, port: int | None, no_proxy: str, expected: bool) -> None:
    assert bypassed(host, port, no_proxy) is expected


def test_proxy_choice() -> None:
    env = {"http": "proxy:3128", "all": "http://fallback:1", "no": "local"}
    assert proxy_for(httpx.URL("http://x/y"), env) == "http://proxy:3128"
    assert proxy_for(httpx.URL("https://x/y"), env) == "http://fallback:1"
    assert proxy_for(httpx.URL("http://local/y"), env) is None
    assert proxy_for(httpx.URL("http://x/y"), {}) is None


def test_ignition_url_goes_through_proxy(proxy: Proxy, server: Server, tmp_path: Path) -> None:
    """install fetches the Ignition config while validating (--dry-run too)."""
    server.add("/config.ign", b'{"ignition": {"version": "3.4.0"}}')
    image = tmp_path / "img.raw"
    image.write_bytes(bytes(1 << 20))
    target = tmp_path / "target.img"
    target.write_bytes(b"keep me")
    url = server.url("/config.ign")
    proc = run_cli(
        "install", target, "-f", image, "--insecure", "--dry-run",
        "--ignition-url", url, "--insecure-ignition",
        env={"http_proxy": proxy.url},
    )  # fmt: skip
    assert f"GET {url} HTTP/1.1" in proxy.requests(), proc.stderr.decode()
    assert target.read_bytes() == b"keep me"
