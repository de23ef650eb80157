"""Trusted-key directories (nestos_inst/keydirs.py) and `--insecure` with real gpg.

The directories are pointed at temporary ones through the documented environment
variables; the real /etc is never touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst import keydirs
from nestos_inst.errors import NestosError
from nestos_inst.profile import COREOS, NESTOS
from nestos_inst.verify import GpgHome, verify_file
from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import http_server

# Key IDs of the keys upstream trusts for Fedora CoreOS (data/keys/coreos/ORIGIN.md).
FEDORA_KEY_IDS = {"199E2F91FD431D51", "829B606631645531", "DBFCF71C6D9F90A6", "655A4B02F577861E"}


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    dist, admin = tmp_path / "dist", tmp_path / "admin"
    monkeypatch.setenv(keydirs.DIST_ENV, str(dist))
    monkeypatch.setenv(keydirs.ADMIN_ENV, str(admin))
    return dist, admin


def _put(directory: Path, name: str, data: bytes = b"x") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    return directory / name


@pytest.mark.parametrize(
    ("layout", "prefix"),
    [
        ("usr/lib/python3/dist-packages/nestos_inst", "/usr"),
        ("usr/local/lib/python3.11/site-packages/nestos_inst", "/usr/local"),
        ("opt/venv/lib64/python3.11/site-packages/nestos_inst", "/opt/venv"),
        ("work/checkout/nestos_inst", "/usr"),
    ],
)
def test_distribution_dir_follows_the_install_prefix(layout: str, prefix: str) -> None:
    assert keydirs.install_prefix(Path("/") / layout) == Path(prefix)


def test_default_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keydirs.DIST_ENV)
    monkeypatch.delenv(keydirs.ADMIN_ENV)
    assert keydirs.admin_key_dir() == Path("/etc/nestos-installer/keys.d")
    assert keydirs.dist_key_dir() == keydirs.install_prefix() / "share/nestos-installer/keys.d"


def test_order_and_profile_subdirectories(dirs: tuple[Path, Path]) -> None:
    dist, admin = dirs
    d_all = _put(dist, "b.asc")
    _put(dist, "a.gpg")  # not *.asc: ignored
    d_nestos = _put(dist / "nestos", "n.asc")
    _put(dist / "coreos", "c.asc")  # other profile: ignored for NestOS
    a_all = _put(admin, "z.asc")
    a_nestos = _put(admin / "nestos", "local.asc")
    (admin / "dir.asc").mkdir()  # not a file: ignored
    files = keydirs.trusted_key_files(NESTOS, ["/x/user.asc"])
    assert files == [d_all, d_nestos, a_all, a_nestos, Path("/x/user.asc")]


def test_coreos_profile_trusts_the_fedora_keys(dirs: tuple[Path, Path]) -> None:
    files = keydirs.trusted_key_files(COREOS)
    assert [f.name for f in files] == ["fedora-coreos-signing-keys.asc"]
    home = GpgHome(files)
    try:
        key_ids = {fpr[-16:] for fpr in home.trusted}
    finally:
        home.close()
    assert key_ids >= FEDORA_KEY_IDS
    assert keydirs.trusted_key_files(NESTOS) == []


def test_nestos_without_keys_says_exactly_what_to_do(dirs: tuple[Path, Path]) -> None:
    _, admin = dirs
    with pytest.raises(NestosError) as info:
        keydirs.require_trusted_keys(NESTOS)
    text = str(info.value)
    assert "no NestOS signing key is published" in text
    assert "--keyring FILE" in text
    assert f"{admin}/" in text
    assert "--insecure" in text


def test_admin_dir_key_verifies(
    dirs: tuple[Path, Path], signing_key: SigningKey, tmp_path: Path
) -> None:
    _, admin = dirs
    _put(admin, "site.asc", signing_key.public.read_bytes())
    data = tmp_path / "img"
    data.write_bytes(b"image bytes\n" * 1000)
    sig = signing_key.sign(data).read_bytes()
    assert verify_file(data, sig, keydirs.trusted_key_files(NESTOS)).ok


# ------------------------------------------------------------- the CLI, end to end


@pytest.fixture
def signed_site(
    tmp_path: Path, signing_key: SigningKey, other_key: SigningKey
) -> Iterator[tuple[str, str]]:
    """One image signed by our key, one signed by a key nobody trusts."""
    with http_server() as server:
        urls = []
        for name, key in (("good.raw", signing_key), ("bad.raw", other_key)):
            path = tmp_path / name
            path.write_bytes(name.encode() * 4096)
            server.add(f"/{name}", path)
            server.add(f"/{name}.sig", key.sign(path))
            urls.append(server.url(f"/{name}"))
        yield urls[0], urls[1]


def _download(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return run_cli("download", "-C", out, *args, env=env)


def test_download_trusts_a_key_in_the_admin_dir(
    tmp_path: Path, signed_site: tuple[str, str], signing_key: SigningKey
) -> None:
    admin = tmp_path / "admin"
    _put(admin, "site.asc", signing_key.public.read_bytes())
    env = {keydirs.ADMIN_ENV: str(admin)}
    good, _ = signed_site
    proc = _download(tmp_path, "-u", good, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "gpg: Good signature" in proc.stderr.decode()


def test_download_without_any_key_fails_before_writing(
    tmp_path: Path, signed_site: tuple[str, str]
) -> None:
    good, _ = signed_site
    proc = _download(tmp_path, "-u", good, env={})
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Error: cannot verify the image signature: no NestOS signing key is published" in err
    assert "--keyring FILE" in err and "--insecure" in err
    assert "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_insecure_skips_even_a_bad_signature(
    tmp_path: Path, signed_site: tuple[str, str], signing_key: SigningKey
) -> None:
    _, bad = signed_site
    # Without --insecure the untrusted signature fails...
    proc = _download(tmp_path, "--keyring", str(signing_key.public), "-u", bad, env={})
    assert proc.returncode == 1
    assert "GPG verification failure" in proc.stderr.decode()
    # ...with it, nothing is verified at all (as upstream's --insecure), and said so.
    proc = _download(tmp_path, "--insecure", "-u", bad, env={})
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Signature found but not verified, as requested (--insecure)" in err
    assert "gpg:" not in err
    assert (tmp_path / "out" / "bad.raw").read_bytes() == b"bad.raw" * 4096


def test_install_insecure_skips_a_present_signature(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(range(256)) * 8192)
    (tmp_path / "img.raw.sig").write_bytes(b"not a signature\n")
    target = tmp_path / "disk.img"
    target.write_bytes(b"")
    proc = run_cli("install", target, "-f", img, "--insecure", "--dry-run")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Signature: found; not verified (--insecure)" in proc.stdout.decode()
    proc = run_cli("install", target, "-f", img, "--insecure")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Signature found but not verified, as requested (--insecure)" in err
    assert target.read_bytes() == img.read_bytes()


def test_install_without_keys_fails_before_writing(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    img.write_bytes(b"\x55" * (2 << 20))
    (tmp_path / "img.raw.sig").write_bytes(b"sig\n")
    target = tmp_path / "disk.img"
    target.write_bytes(b"keep me")
    for extra in ((), ("--dry-run",)):
        proc = run_cli("install", target, "-f", img, *extra)
        err = proc.stderr.decode()
        assert proc.returncode == 1
        assert "no NestOS signing key is published" in err, err
        assert target.read_bytes() == b"keep me"
