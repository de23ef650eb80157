"""Image sources and open_verified (the interface install and osmet use)."""

from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.download import should_decompress
from nestos_inst.errors import NestosError, VerifyError, chain
from nestos_inst.io.compress import open_decompressed
from nestos_inst.progress import Progress, format_size
from nestos_inst.sources import (
    FileSource,
    ImageSource,
    UrlSource,
    open_verified,
    signature_url,
    stream_sources,
    url_filename,
)
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import http_server


@pytest.mark.parametrize(
    ("name", "decompress", "out"),
    [
        ("foo.img", True, None),
        ("foo.bz2", True, None),
        ("foo.gz", False, None),
        ("foo.gz", True, "foo"),
        ("foo.tar.gz", True, None),
        ("foo.xz", True, "foo"),
        ("foo.tar.xz", True, None),
        ("foo.zst", True, None),
    ],
)
def test_should_decompress_vectors(name: str, decompress: bool, out: str | None) -> None:
    assert should_decompress(name, decompress) == out


@pytest.mark.parametrize(
    ("url", "sig"),
    [
        ("https://h/a/img.raw.xz", "https://h/a/img.raw.xz.sig"),
        ("https://h/a/img.raw.xz?x=1&y=2", "https://h/a/img.raw.xz.sig?x=1&y=2"),
    ],
)
def test_signature_url(url: str, sig: str) -> None:
    assert signature_url(url) == sig


def test_url_filename() -> None:
    assert url_filename("https://h/a/img.raw.xz?q=1") == "img.raw.xz"
    assert url_filename("https://h/a/my%20img.iso") == "my img.iso"
    for bad in ("https://h/", "https://h/a/..", "https://h/a/%2e%2e", "https://h/x%2Fy"):
        with pytest.raises(NestosError, match="couldn't determine a file name"):
            url_filename(bad)


@pytest.fixture
def image(tmp_path: Path, signing_key: SigningKey) -> Path:
    path = tmp_path / "disk.raw.xz"
    path.write_bytes(lzma.compress(bytes(range(256)) * 8192, preset=0))
    signing_key.sign(path)
    return path


def test_file_source_verifies(
    image: Path, signing_key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    src = FileSource(image)
    assert isinstance(src, ImageSource)
    assert src.description == f"Copying image from {image}\nReading signature from {image}.sig"
    progress = Progress("disk", None)
    reader = open_verified(src, insecure=False, keyrings=[signing_key.public], progress=progress)
    with reader:
        out = open_decompressed(reader).read()
        reader.finish()
    assert out == bytes(range(256)) * 8192
    assert src.length == image.stat().st_size
    err = capsys.readouterr().err
    assert "gpg: Good signature from" in err
    size = format_size(image.stat().st_size)
    assert f"Read disk {size}/{size} (100%)\n" in err


def test_file_source_missing_signature(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path(f"{image}.sig").unlink()
    src = FileSource(image)
    assert src.signature() is None
    assert "Couldn't read signature file: No such file or directory (os error 2)" in (
        capsys.readouterr().err
    )
    with pytest.raises(NestosError, match="--insecure not specified and signature not found"):
        open_verified(src, insecure=False)
    reader = open_verified(src, insecure=True)
    with reader:
        reader.finish()
    assert "Signature not found; skipping verification as requested" in capsys.readouterr().err


def test_finish_drains_unread_bytes(image: Path, signing_key: SigningKey) -> None:
    reader = open_verified(FileSource(image), insecure=False, keyrings=[signing_key.public])
    with reader:
        reader.read(10)
        reader.finish()  # the rest is fed to GPG before judging
        assert reader.bytes_read == image.stat().st_size


def test_bad_signature_raises(image: Path, other_key: SigningKey, signing_key: SigningKey) -> None:
    other_key.sign(image)
    reader = open_verified(FileSource(image), insecure=False, keyrings=[signing_key.public])
    with reader, pytest.raises(VerifyError) as info:
        reader.finish()
    assert chain(info.value)[0] == "GPG verification failure"


def test_sha256_checked(image: Path, signing_key: SigningKey) -> None:
    src = FileSource(image)
    src.sha256 = "f" * 64
    reader = open_verified(src, insecure=False, keyrings=[signing_key.public])
    with reader, pytest.raises(VerifyError) as info:
        reader.finish()
    good = hashlib.sha256(image.read_bytes()).hexdigest()
    assert chain(info.value) == [
        "sha256 mismatch for disk.raw.xz",
        f"computed '{good}' but stream metadata says '{'f' * 64}'",
    ]


def test_url_and_stream_sources(image: Path, signing_key: SigningKey) -> None:
    import json

    with http_server() as srv:
        srv.add("/i/disk.raw.xz", image)
        srv.add("/i/disk.raw.xz.sig", Path(f"{image}.sig"))
        url = srv.url("/i/disk.raw.xz")
        art = {"location": url, "signature": url + ".sig"}
        doc = {
            "architectures": {
                "aarch64": {"artifacts": {"metal": {"formats": {"raw.xz": {"disk": art}}}}}
            }
        }
        srv.add("/s/stable.json", json.dumps(doc).encode())
        sources = stream_sources("stable", "aarch64", "metal", "raw.xz", srv.url("/s/"), 0)
        assert [s.artifact_type for s in sources] == ["disk"]
        assert sources[0].description.endswith(f"referenced from {srv.url('/s/stable.json')}")
        for src in (UrlSource(url), sources[0]):
            reader = open_verified(src, insecure=False, keyrings=[signing_key.public])
            with reader:
                assert reader.read() == image.read_bytes()
                reader.finish()
            assert src.length == image.stat().st_size
            assert src.filename == "disk.raw.xz"


def test_url_source_image_404(signing_key: SigningKey) -> None:
    with http_server() as srv:
        srv.add("/x.sig", b"sig")
        src = UrlSource(srv.url("/x"))
        with pytest.raises(NestosError) as info:
            open_verified(src, insecure=False, keyrings=[signing_key.public])
        assert chain(info.value) == [f"fetching '{srv.url('/x')}'", "HTTP 404 Not Found"]


@pytest.mark.compat
@pytest.mark.parametrize("name", ["1M", "1M.gz", "1M.xz", "1M.zst"])
def test_upstream_signature_checks(upstream: Path, tmp_path: Path, name: str) -> None:
    """docs/compat.md#reference-results download `test_signature_checks` through FileSource +
    open_verified."""
    vdir = upstream / "verify"
    key = vdir / "test-key.pub.asc"
    data = bytes(1 << 20) if name == "1M" else (vdir / name).read_bytes()
    sig = (vdir / f"{name}.sig").read_bytes()
    for suffix, extra, ok in (("good", b"", True), ("bad", b"\0", False)):
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(data + extra)
        Path(f"{path}.sig").write_bytes(sig)
        reader = open_verified(FileSource(path), insecure=False, keyrings=[key])
        with reader:
            if ok:
                assert open_decompressed(reader).read() == bytes(1 << 20)
                reader.finish()
            else:
                with pytest.raises(NestosError):
                    open_decompressed(reader).read()
                    reader.finish()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["https://h/", "https://[", "http://h:x/"]))
def test_url_filename_only_raises_our_error(text: str, prefix: str) -> None:
    try:
        signature_url(prefix + text)
        name = url_filename(prefix + text)
    except NestosError:
        return
    assert name not in ("", ".", "..")
    assert "/" not in name
    assert "\0" not in name
