"""`download` / `list-stream` end to end: real CLI subprocess, real HTTP server, real gpg.

Every failure case asserts the message and that no partial image or .sig is left.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import Server, http_server

FAST = {"NESTOS_INSTALLER_RETRY_DELAY_SCALE": "0.001"}


def raw_image() -> bytes:
    rnd = random.Random(42)  # noqa: S311 - reproducible test data
    return rnd.randbytes(1 << 20) + bytes(1 << 20) + b"NestOS image end\n"


@dataclass
class Site:
    server: Server
    files: Path  # served artifacts and their signatures
    raw: bytes
    key: SigningKey
    other: SigningKey

    def put(self, name: str, data: bytes, *, sign: SigningKey | None = None, **kw: object) -> str:
        path = self.files / name
        path.write_bytes(data)
        self.server.add(f"/art/{name}", path, **kw)
        if sign is not None:
            sig = sign.sign(path)
            self.server.add(f"/art/{name}.sig", sig)
        return self.server.url(f"/art/{name}")

    def stream(self, name: str, formats: dict[str, dict[str, dict[str, str]]]) -> str:
        doc = {
            "stream": name,
            "metadata": {"last-modified": "2026-01-01T00:00:00Z"},
            "architectures": {"x86_64": {"artifacts": {"metal": {"formats": formats}}}},
        }
        self.server.add(f"/streams/{name}.json", json.dumps(doc).encode())
        return self.server.url("/streams/")

    def artifact(self, name: str, *, sha256: bool = True) -> dict[str, str]:
        url = self.server.url(f"/art/{name}")
        art = {"location": url, "signature": url + ".sig"}
        if sha256:
            art["sha256"] = hashlib.sha256((self.files / name).read_bytes()).hexdigest()
        return art


@pytest.fixture
def site(tmp_path: Path, signing_key: SigningKey, other_key: SigningKey) -> Iterator[Site]:
    files = tmp_path / "served"
    files.mkdir()
    with http_server() as server:
        yield Site(server, files, raw_image(), signing_key, other_key)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def dl(
    site: Site, out: Path, *args: str | Path, keyring: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run `download -C out`; its TMPDIR is private so leftover GnuPG homes show up."""
    extra: list[str | Path] = ["--keyring", site.key.public] if keyring else []
    tmp = site.files.parent / "tmpdir"
    tmp.mkdir(exist_ok=True)
    proc = run_cli("download", "-C", out, *extra, *args, env={**FAST, "TMPDIR": str(tmp)})
    assert os.listdir(tmp) == [], "temporary files left behind"
    return proc


def err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode()


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


XZ = lzma.compress(raw_image(), preset=0)
GZ = gzip.compress(raw_image(), mtime=0)


# ---------------------------------------------------------------- happy paths


def test_image_url_download(site: Site, out: Path) -> None:
    url = site.put("nestos-1.raw.xz", XZ, sign=site.key)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode() == f"{out}/nestos-1.raw.xz\n"
    e = err(proc)
    assert e.startswith(f"Downloading image from {url}\nDownloading signature from {url}.sig\n")
    assert "Read disk " in e
    assert "gpg: Good signature from" in e
    assert (out / "nestos-1.raw.xz").read_bytes() == XZ
    assert (out / "nestos-1.raw.xz.sig").read_bytes() == (
        site.files / "nestos-1.raw.xz.sig"
    ).read_bytes()
    assert listing(out) == ["nestos-1.raw.xz", "nestos-1.raw.xz.sig"]


def test_default_directory_prints_dot_path(site: Site, out: Path) -> None:
    url = site.put("a.raw.gz", GZ, sign=site.key)
    proc = run_cli("download", "--keyring", site.key.public, "-u", url, cwd=out)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode() == "./a.raw.gz\n"


def test_stream_download_pxe_sorted(site: Site, out: Path) -> None:
    for name in ("k", "i.img", "r.img"):
        site.put(name, name.encode() * 1000, sign=site.key)
    base = site.stream(
        "2403-LTS",
        {
            "pxe": {
                "rootfs": site.artifact("r.img"),
                "kernel": site.artifact("k"),
                "initramfs": site.artifact("i.img"),
            }
        },
    )
    proc = dl(site, out, "-s", "2403-LTS", "-a", "x86_64", "-f", "pxe", "--stream-base-url", base)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode().splitlines() == [f"{out}/i.img", f"{out}/k", f"{out}/r.img"]
    assert err(proc).startswith(
        f"Downloading x86_64 metal image (pxe) and signature referenced from {base}2403-LTS.json\n"
    )
    assert "Read initramfs" in err(proc)
    assert listing(out) == ["i.img", "i.img.sig", "k", "k.sig", "r.img", "r.img.sig"]


@pytest.mark.parametrize(("name", "data"), [("disk.raw.xz", XZ), ("disk.raw.gz", GZ)])
def test_decompress(site: Site, out: Path, name: str, data: bytes) -> None:
    url = site.put(name, data, sign=site.key)
    proc = dl(site, out, "-d", "-u", url)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode() == f"{out}/disk.raw\n"
    assert (out / "disk.raw").read_bytes() == site.raw
    assert listing(out) == ["disk.raw"]  # -d writes no .sig


def test_decompress_keeps_tarballs(site: Site, out: Path) -> None:
    url = site.put("thing.tar.gz", GZ, sign=site.key)
    proc = dl(site, out, "-d", "-u", url)
    assert proc.returncode == 0, err(proc)
    assert listing(out) == ["thing.tar.gz"]
    assert (out / "thing.tar.gz").read_bytes() == GZ


def test_redirect_names_file_after_final_url(site: Site, out: Path) -> None:
    site.put("real-name.raw.xz", XZ, sign=site.key)
    site.server.add("/latest.raw.xz", None, redirect="/art/real-name.raw.xz")
    site.server.add("/latest.raw.xz.sig", (site.files / "real-name.raw.xz.sig").read_bytes())
    proc = dl(site, out, "-u", site.server.url("/latest.raw.xz"))
    assert proc.returncode == 0, err(proc)
    assert listing(out) == ["real-name.raw.xz", "real-name.raw.xz.sig"]


def test_skip_if_present_only_when_it_verifies(site: Site, out: Path) -> None:
    url = site.put("img.raw.xz", XZ, sign=site.key)
    assert dl(site, out, "-u", url).returncode == 0
    target = out / "img.raw.xz"
    before = target.stat()
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode() == f"{target}\n"
    assert "Read disk" not in err(proc)
    assert "gpg: Good signature" in err(proc)
    assert target.stat().st_ino == before.st_ino
    # A corrupted copy does not verify: downloaded again.
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 0, err(proc)
    assert "Read disk" in err(proc)
    assert target.read_bytes() == XZ


def test_insecure_without_signature(site: Site, out: Path) -> None:
    url = site.put("unsigned.raw.xz", XZ)
    proc = dl(site, out, "--insecure", "-u", url)
    assert proc.returncode == 0, err(proc)
    e = err(proc)
    assert "Failed to fetch signature: fetching signature URL" in e
    assert "Signature not found; skipping verification as requested" in e
    assert listing(out) == ["unsigned.raw.xz"]


# ---------------------------------------------------------------- HTTP faults


def test_404_image(site: Site, out: Path) -> None:
    url = site.server.url("/art/none.raw.xz")
    site.server.add("/art/none.raw.xz.sig", b"sig")
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert f"Error: fetching '{url}'\n\nCaused by:\n    HTTP 404 Not Found" in err(proc)
    assert listing(out) == []


def test_404_signature_without_insecure(site: Site, out: Path) -> None:
    url = site.put("nosig.raw.xz", XZ)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    e = err(proc)
    assert "Failed to fetch signature: fetching signature URL" in e
    assert "Error: --insecure not specified and signature not found" in e
    assert listing(out) == []


def test_503_twice_then_ok(site: Site, out: Path) -> None:
    url = site.put("flaky.raw.xz", XZ, sign=site.key, fail_times=2)
    proc = dl(site, out, "--fetch-retries", "2", "-u", url)
    assert proc.returncode == 0, err(proc)
    e = err(proc)
    assert (
        f"Error fetching '{url}': HTTP 503 Service Unavailable\nSleeping 1s and retrying...\n"
        f"Error fetching '{url}': HTTP 503 Service Unavailable\nSleeping 2s and retrying...\n"
    ) in e
    assert (out / "flaky.raw.xz").read_bytes() == XZ


def test_503_without_retries(site: Site, out: Path) -> None:
    url = site.put("flaky.raw.xz", XZ, sign=site.key, fail_times=2)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert f"Error: fetching '{url}'\n\nCaused by:\n    HTTP 503 Service Unavailable" in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "range-ignored"])
def test_dropped_connection_resumes(site: Site, out: Path, ignore_range: bool) -> None:
    data = random.Random(7).randbytes(3 << 20)  # noqa: S311 - reproducible test data  # incompressible: the drop hits mid-body
    url = site.put(
        "big.raw.xz",
        data,
        sign=site.key,
        drop_after=1_100_000,
        drop_times=2,
        etag='"abc"',
        ignore_range=ignore_range,
    )
    proc = dl(site, out, "--fetch-retries", "3", "-u", url)
    assert proc.returncode == 0, err(proc)
    assert (out / "big.raw.xz").read_bytes() == data
    assert "gpg: Good signature" in err(proc)
    statuses = [h.status for h in site.server.hits("/art/big.raw.xz")]
    assert statuses == ([200, 200, 200] if ignore_range else [200, 206, 206])


def test_dropped_connection_without_retries(site: Site, out: Path) -> None:
    data = random.Random(8).randbytes(2 << 20)  # noqa: S311 - reproducible test data
    url = site.put("big.raw.xz", data, sign=site.key, drop_after=500_000, drop_times=1)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert f"Error: reading '{url}'" in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_mid_transfer_leaves_nothing(site: Site, out: Path, signame: str) -> None:
    """Ctrl-C, systemd's stop or a closed terminal while the image streams in: exit
    128+N at once, no partial image, no .sig, no temporary file, no GnuPG home."""
    import signal

    from tests.helpers.cli import interrupt_cli

    data = random.Random(9).randbytes(8 << 20)  # noqa: S311 - reproducible test data
    url = site.put("slow.raw.xz", data, sign=site.key, rate=2 << 20)
    tmp = site.files.parent / "tmpdir"
    tmp.mkdir()
    rc, e = interrupt_cli(
        "download", "-C", out, "--keyring", site.key.public, "-u", url,
        signum=getattr(signal, signame), env={"TMPDIR": str(tmp)}, timeout=30,
    )  # fmt: skip
    assert rc == 128 + getattr(signal, signame), e
    assert listing(out) == []
    assert os.listdir(tmp) == []


def test_bad_fetch_retries_is_usage_error(site: Site, out: Path) -> None:
    proc = dl(site, out, "--fetch-retries", "abc", "-u", "http://127.0.0.1:1/x")
    assert proc.returncode == 2
    assert "error:" in err(proc)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--fetch-retries", "99999999999", "expected a number or 'infinite'"),
        ("--fetch-timeout", "-1", "invalid timeout '-1'"),
    ],
)
def test_fetch_values_use_installs_parsers(
    site: Site, out: Path, flag: str, value: str, message: str
) -> None:
    """download and install share one parser per value: the same bounds, the same words."""
    proc = dl(site, out, flag, value, "-u", "http://127.0.0.1:1/x")
    assert proc.returncode == 2
    assert message in err(proc)
    assert listing(out) == []


# ---------------------------------------------------------------- verification faults


def test_wrong_signature(site: Site, out: Path) -> None:
    url = site.put("a.raw.xz", XZ)
    site.put("b.raw.gz", GZ, sign=site.key)
    site.server.add("/art/a.raw.xz.sig", (site.files / "b.raw.gz.sig").read_bytes())
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert "Error: GPG verification failure" in err(proc)
    assert "BAD signature" in err(proc)
    assert listing(out) == []


def test_unknown_key(site: Site, out: Path) -> None:
    url = site.put("a.raw.xz", XZ, sign=site.other)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert "Error: GPG verification failure" in err(proc)
    assert "No public key" in err(proc)
    assert listing(out) == []


def test_no_keyring_means_no_trust(site: Site, out: Path) -> None:
    url = site.put("a.raw.xz", XZ, sign=site.key)
    proc = dl(site, out, "-u", url, keyring=False)
    assert proc.returncode == 1
    assert "no NestOS signing key is published" in err(proc)
    assert "--keyring FILE" in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize("decompress", [False, True], ids=["plain", "-d"])
def test_flipped_byte(site: Site, out: Path, decompress: bool) -> None:
    url = site.put("a.raw.gz", GZ, sign=site.key)
    bad = bytearray(GZ)
    bad[len(bad) // 2] ^= 0x01
    (site.files / "a.raw.gz").write_bytes(bytes(bad))
    proc = dl(site, out, *(["-d"] if decompress else []), "-u", url)
    assert proc.returncode == 1
    assert "Error: " in err(proc)
    assert listing(out) == []


def test_truncated_image_fails_signature(site: Site, out: Path) -> None:
    url = site.put("a.raw.xz", XZ, sign=site.key)
    (site.files / "a.raw.xz").write_bytes(XZ[:-100])
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert "Error: GPG verification failure" in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize(("name", "data"), [("t.raw.xz", XZ), ("t.raw.gz", GZ)])
def test_signed_truncated_stream_is_rejected_by_decompressor(
    site: Site, out: Path, name: str, data: bytes
) -> None:
    url = site.put(name, data[: len(data) // 2], sign=site.key)
    proc = dl(site, out, "-d", "-u", url)
    assert proc.returncode == 1
    assert "Error: " in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize(("name", "data"), [("g.raw.xz", XZ), ("g.raw.gz", GZ)])
def test_trailing_garbage_after_stream(site: Site, out: Path, name: str, data: bytes) -> None:
    # Signed *with* the garbage: only the decompressor can catch it (CVE-2021-20319).
    url = site.put(name, data + b"\0unsigned payload", sign=site.key)
    proc = dl(site, out, "-d", "-u", url)
    assert proc.returncode == 1
    assert "found trailing data after compressed stream" in err(proc)
    assert listing(out) == []


def test_sha256_mismatch(site: Site, out: Path) -> None:
    site.put("d.raw.xz", XZ, sign=site.key)
    art = site.artifact("d.raw.xz")
    good = art["sha256"]
    art["sha256"] = "0" * 64
    base = site.stream("stable", {"raw.xz": {"disk": art}})
    proc = dl(site, out, "--stream-base-url", base, "-a", "x86_64")
    assert proc.returncode == 1
    e = err(proc)
    assert "Error: sha256 mismatch for d.raw.xz" in e
    assert f"computed '{good}' but stream metadata says '{'0' * 64}'" in e
    assert listing(out) == []


def test_sha256_match(site: Site, out: Path) -> None:
    site.put("d.raw.xz", XZ, sign=site.key)
    base = site.stream("stable", {"raw.xz": {"disk": site.artifact("d.raw.xz")}})
    proc = dl(site, out, "--stream-base-url", base, "-a", "x86_64")
    assert proc.returncode == 0, err(proc)
    assert listing(out) == ["d.raw.xz", "d.raw.xz.sig"]


def test_failure_keeps_previous_files(site: Site, out: Path) -> None:
    (out / "a.raw.xz").write_bytes(b"old image")
    (out / "a.raw.xz.sig").write_bytes(b"old sig")
    url = site.put("a.raw.xz", XZ, sign=site.other)
    proc = dl(site, out, "-u", url)
    assert proc.returncode == 1
    assert (out / "a.raw.xz").read_bytes() == b"old image"
    assert (out / "a.raw.xz.sig").read_bytes() == b"old sig"
    assert listing(out) == ["a.raw.xz", "a.raw.xz.sig"]


def test_missing_directory(site: Site, tmp_path: Path) -> None:
    url = site.put("a.raw.xz", XZ, sign=site.key)
    proc = dl(site, tmp_path / "nope", "-u", url)
    assert proc.returncode == 1
    assert "No such file or directory (os error 2)" in err(proc)


# ---------------------------------------------------------------- stream metadata faults


def test_malformed_stream_json(site: Site, out: Path) -> None:
    site.server.add("/streams/stable.json", b'{"architectures": ')
    proc = dl(site, out, "--stream-base-url", site.server.url("/streams/"))
    assert proc.returncode == 1
    assert "Error: decoding stream metadata\n\nCaused by:\n" in err(proc)
    assert listing(out) == []


@pytest.mark.parametrize(
    "args",
    [["-a", "aarch64"], ["-a", "x86_64", "-p", "qemu"], ["-a", "x86_64", "-f", "iso"]],
)
def test_missing_arch_platform_format(site: Site, out: Path, args: list[str]) -> None:
    site.put("d.raw.xz", XZ, sign=site.key)
    base = site.stream("stable", {"raw.xz": {"disk": site.artifact("d.raw.xz")}})
    proc = dl(site, out, "--stream-base-url", base, *args)
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert proc.returncode == 1
    assert (
        f"Error: couldn't find architecture {opts['-a']}, platform {opts.get('-p', 'metal')}, "
        f"format {opts.get('-f', 'raw.xz')} in stream metadata"
    ) in err(proc)
    assert listing(out) == []


def test_missing_stream(site: Site, out: Path) -> None:
    proc = dl(site, out, "-s", "nope", "--stream-base-url", site.server.url("/streams/"))
    assert proc.returncode == 1
    assert f"fetching '{site.server.url('/streams/nope.json')}'" in err(proc)


# ---------------------------------------------------------------- list-stream


def test_list_stream(site: Site) -> None:
    site.put("d.raw.xz", XZ, sign=site.key)
    art = site.artifact("d.raw.xz")
    base = site.stream(
        "stable", {"raw.xz": {"disk": art}, "qcow2.gz": {"disk": art}, "4k.raw.xz": {"disk": art}}
    )
    proc = run_cli("list-stream", "--stream-base-url", base)
    assert proc.returncode == 0, err(proc)
    assert proc.stdout.decode() == (
        "Architecture  Platform  Format\n"
        "x86_64        metal     4k.raw.xz\n"
        "x86_64        metal     qcow2.gz\n"
        "x86_64        metal     raw.xz\n"
    )
    proc = run_cli("list-stream", "--json", "--stream-base-url", base)
    assert json.loads(proc.stdout) == [
        {"architecture": "x86_64", "platform": "metal", "format": f}
        for f in ("4k.raw.xz", "qcow2.gz", "raw.xz")
    ]


@pytest.mark.compat
def test_list_stream_fcos_fixture(site: Site, upstream: Path) -> None:
    site.server.add("/s/stable.json", (upstream / "stream" / "fcos-stream.json").read_bytes())
    proc = run_cli("list-stream", "--stream-base-url", site.server.url("/s/"))
    assert proc.returncode == 0, err(proc)
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["Architecture", "Platform", "Format"]
    assert "x86_64        metal         4k.raw.xz" in lines


def test_no_temp_files_left_anywhere(site: Site, out: Path) -> None:
    url = site.put("a.raw.xz", XZ, sign=site.other)
    dl(site, out, "-u", url)
    assert not [p for p in os.listdir(out) if p.startswith(".nestos-installer-temp")]


# ---------------------------------------------------------------- speed tricks off


def _outcome(
    proc: subprocess.CompletedProcess[bytes], out: Path
) -> tuple[int, str, list[str], dict[str, bytes]]:
    """What a user sees, minus progress lines (their count depends on timing)."""
    lines = [line for line in err(proc).splitlines() if not line.startswith("Read ")]
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    stdout = proc.stdout.decode().replace(str(out), "OUT")
    return proc.returncode, stdout, [line.replace(str(out), "OUT") for line in lines], files


@pytest.mark.parametrize("case", ["good", "flipped", "dropped", "sha256"])
def test_same_results_with_speed_tricks_off(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """NESTOS_INSTALLER_FAST_PATHS=none (no own socket backend, no splice/tee, default
    malloc, GPGME finding gpg through gpgconf) gives the same bytes, messages and exit
    code as the default."""
    data = random.Random(5).randbytes(3 << 20)  # noqa: S311 - reproducible test data
    kw: dict[str, object] = {"drop_after": 1_100_000, "drop_times": 1} if case == "dropped" else {}
    url = site.put("img.raw.xz", data, sign=site.key, etag='"v1"', **kw)
    if case == "flipped":
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 1
        (site.files / "img.raw.xz").write_bytes(bytes(bad))
    args: list[str] = ["--fetch-retries", "2", "-u", url]
    if case == "sha256":
        art = site.artifact("img.raw.xz")
        art["sha256"] = "0" * 64
        args = ["--stream-base-url", site.stream("stable", {"raw.xz": {"disk": art}})]
        args += ["-a", "x86_64"]
    results = []
    for mode in ("all", "none"):
        out = tmp_path / f"out-{mode}"
        out.mkdir()
        if case == "dropped":  # the server drops each connection once per entry
            site.server.add("/art/img.raw.xz", site.files / "img.raw.xz", etag='"v1"', **kw)
        monkeypatch.setenv("NESTOS_INSTALLER_FAST_PATHS", mode)
        results.append(_outcome(dl(site, out, *args), out))
    assert results[0][:2] == results[1][:2]
    assert results[0][2] == results[1][2], "\n".join(results[1][2])
    assert results[0][3] == results[1][3]
    assert results[0][0] == (0 if case in ("good", "dropped") else 1)
