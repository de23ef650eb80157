"""`--profile`: the CoreOS layout and keys when asked, NestOS otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey


@pytest.mark.parametrize(
    ("extra", "member"),
    [
        ((), "etc/nestos-firstboot-network/eth0.nmconnection"),
        (("--profile", "nestos"), "etc/nestos-firstboot-network/eth0.nmconnection"),
        (("--profile", "coreos"), "etc/coreos-firstboot-network/eth0.nmconnection"),
    ],
)
def test_pxe_network_wrap_layout(tmp_path: Path, extra: tuple[str, ...], member: str) -> None:
    keyfile = tmp_path / "eth0.nmconnection"
    keyfile.write_text("[connection]\nid=eth0\n")
    out = tmp_path / "net.img"
    proc = run_cli("pxe", "network", "wrap", "-k", keyfile, *extra, "-o", out)
    assert proc.returncode == 0, proc.stderr.decode()
    listing = run_cli("dev", "show", "initrd", out)
    assert member in listing.stdout.decode().splitlines()
    assert "firstboot-network/" not in listing.stdout.decode().replace(member, "")
    # Either layout unwraps to the same keyfile.
    unwrapped = tmp_path / "unwrapped"
    unwrapped.mkdir()
    proc = run_cli("pxe", "network", "unwrap", "-C", unwrapped, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (unwrapped / "eth0.nmconnection").read_text() == keyfile.read_text()


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    keyfile = tmp_path / "eth0.nmconnection"
    keyfile.write_text("[connection]\n")
    proc = run_cli("pxe", "network", "wrap", "-k", keyfile, "--profile", "fedora")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "argument --profile: invalid choice: 'fedora' (choose from 'coreos', 'nestos')" in err


def test_download_coreos_profile_trusts_fedora_keys_only(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    """A signature by our own test key is not trusted under --profile coreos (only the
    Fedora keys are): the failure is a verification failure, not "no key published"."""
    from tests.helpers.httpserver import http_server

    img = tmp_path / "a.raw"
    img.write_bytes(b"x" * 10000)
    sig = signing_key.sign(img)
    with http_server() as srv:
        srv.add("/a.raw", img)
        srv.add("/a.raw.sig", sig)
        out = tmp_path / "out"
        out.mkdir()
        url = srv.url("/a.raw")
        nestos = run_cli("download", "-C", out, "-u", url)
        coreos = run_cli("download", "-C", out, "-u", url, "--profile", "coreos")
    assert nestos.returncode == coreos.returncode == 1
    assert "no NestOS signing key is published" in nestos.stderr.decode()
    err = coreos.stderr.decode()
    assert "Error: GPG verification failure" in err
    assert "No public key" in err
    assert list(out.iterdir()) == []
