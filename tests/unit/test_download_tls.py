"""`download` over https:// from a real TLS server on 127.0.0.1 (self-signed by openssl).

Mirrors serve NestOS over HTTPS, where the kernel path cannot apply and httpx's own
transport (built lazily) does the work: the bytes and the checks must be the same,
and a certificate that is not trusted must stop the download before any byte lands.
"""

from __future__ import annotations

import os
import random
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import Server, http_server
from tests.helpers.tlscert import self_signed

DATA = random.Random(11).randbytes(3 << 20) + b"tls end"  # noqa: S311 - test data


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (key, cert)."""
    return self_signed(d, "127.0.0.1", ip="127.0.0.1", name="server", days=1)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(cert: tuple[Path, Path]) -> Iterator[Server]:
    key, crt = cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    with http_server(tls=ctx) as srv:
        yield srv


def serve(server: Server, tmp_path: Path, key: SigningKey) -> str:
    path = tmp_path / "nestos.raw.xz"
    path.write_bytes(DATA)
    server.add("/nestos.raw.xz", path)
    server.add("/nestos.raw.xz.sig", key.sign(path))
    return server.url("/nestos.raw.xz")


def download(
    url: str, out: Path, key: SigningKey, ca: Path | None
) -> subprocess.CompletedProcess[bytes]:
    env = {"SSL_CERT_FILE": str(ca)} if ca is not None else {}
    return run_cli("download", "-C", out, "--keyring", key.public, "-u", url, env=env)


def test_https_download_verifies(
    tls_server: Server, tmp_path: Path, signing_key: SigningKey, cert: tuple[Path, Path]
) -> None:
    url = serve(tls_server, tmp_path, signing_key)
    assert url.startswith("https://")
    out = tmp_path / "out"
    out.mkdir()
    proc = download(url, out, signing_key, cert[1])
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "nestos.raw.xz").read_bytes() == DATA
    assert "gpg: Good signature from" in proc.stderr.decode()


def test_untrusted_certificate_stops_before_any_byte(
    tls_server: Server, tmp_path: Path, signing_key: SigningKey
) -> None:
    url = serve(tls_server, tmp_path, signing_key)
    out = tmp_path / "out"
    out.mkdir()
    # A trust store holding some other certificate: the server must be refused.
    other = tmp_path / "other"
    other.mkdir()
    stranger = make_cert(other)[1]
    proc = download(url, out, signing_key, stranger)
    assert proc.returncode == 1
    e = proc.stderr.decode()
    assert f"Error: fetching '{url}'\n\nCaused by:\n    could not verify the TLS certificate" in e
    assert "(CERTIFICATE_VERIFY_FAILED)" in e, e
    assert "[SSL" not in e and "[Errno" not in e, e
    assert os.listdir(out) == []
    assert not [r for r in tls_server.requests if r.path == "/nestos.raw.xz"]


def test_broken_trust_store_is_a_clear_error(
    tls_server: Server, tmp_path: Path, signing_key: SigningKey
) -> None:
    url = serve(tls_server, tmp_path, signing_key)
    out = tmp_path / "out"
    out.mkdir()
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    proc = download(url, out, signing_key, empty)
    assert proc.returncode == 1
    e = proc.stderr.decode()
    assert "Traceback" not in e, e
    assert f"loading trusted certificates from {empty}" in e, e
    assert os.listdir(out) == []
