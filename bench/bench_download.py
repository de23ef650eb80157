"""Download + verify throughput from 127.0.0.1 against curl/gpg/xz baselines (same run).

1. `download -u URL` (fetch + streaming GPG verify + write + fsync) vs `curl -o file`
   followed by `gpg --verify` (sequential). Goal: ratio >= 0.9.
2. `download -d -u URL.xz` vs `curl URL.xz | xz -dc > file`. Goal: ratio >= 0.95.
Peak RSS of our process (VmHWM, sampled) must stay <= 100 MiB.
For reference only, `curl URL | gpg --verify SIG -` (no file written) shows what
overlapping network and GPG can reach at best: gpg reads a pipe 8 KiB at a time,
which costs it ~30% more than reading the file. The server is plain HTTP, so ours
takes the kernel path (splice/tee, docs/download.md).
Ratio = baseline seconds / our seconds (higher is better). Inputs are cached in
/var/tmp/nestos-bench-cache keyed by their recipe; BENCH_DOWNLOAD_MIB resizes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.common import MIB, Sample, compare, limit, python_env, run_pipeline
from bench.signing import signing_workdir
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import http_server

CACHE = Path("/var/tmp/nestos-bench-cache")
RSS_LIMIT_MIB = 100


def _system_files() -> Iterator[bytes]:
    """Real binaries, libraries and text from this system: disk-like, xz-compressible."""
    for root in ("/usr/lib", "/usr/bin", "/usr/share"):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read(8 * MIB)
                except OSError:
                    continue
                if data:
                    yield data


def _image(path: Path, size: int) -> None:
    """A disk-like image: 11 MiB of real file content then 5 MiB of zeros, repeated."""
    files = _system_files()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = bytearray()
            while len(chunk) < 11 * MIB:
                data = next(files, None)
                if data is None:
                    files = _system_files()
                    continue
                chunk += data
            block = bytes(chunk[: 11 * MIB]) + bytes(5 * MIB)
            block = block[: size - written]
            f.write(block)
            written += len(block)


def _inputs(mib: int) -> tuple[Path, Path, Path]:
    """(plain artifact, xz artifact, key dir) built once and cached."""
    d = CACHE / f"download-v2-{mib}m"
    done = d / ".done"
    if not done.exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        print(f"building {mib} MiB inputs in {d} (cached for later runs)...", flush=True)
        raw = d / "image.raw"
        _image(raw, mib * MIB)
        subprocess.run(["xz", "-1", "-T2", "-k", str(raw)], check=True)
        plain = d / "artifact.bin"
        raw.rename(plain)
        done.touch()
    return d / "artifact.bin", d / "image.raw.xz", d


def _ours(argv: list[str], env: dict[str, str]) -> Sample:
    return run_pipeline([argv], env=env)


def _pipeline(url: str, out: Path) -> Sample:
    """curl URL | xz -dc > out."""
    return run_pipeline([["curl", "-sSf", url], ["xz", "-dc"]], stdout=out)


def _curl_then_gpg(url: str, out: Path, sig: Path, home: Path) -> Sample:
    """curl -o file, then gpg --verify (sequential, as a user would)."""
    a = run_pipeline([["curl", "-sSf", "-o", str(out), url]])
    verify = [
        "gpg", "--homedir", str(home), "--batch", "--quiet", "--verify", str(sig), str(out),
    ]  # fmt: skip
    b = run_pipeline([verify])
    return Sample(a.secs + b.secs, max(a.rss_kib, b.rss_kib), a.cpu + b.cpu)


def _curl_gpg(url: str, home: Path, sig: Path) -> Sample:
    """curl piped into gpg --verify: the floor for verify-while-streaming."""
    verify = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--verify", str(sig), "-"]
    return run_pipeline([["curl", "-sSf", url], verify])


def main() -> int:
    mib = int(os.environ.get("BENCH_DOWNLOAD_MIB", "512"))
    plain, xz, _ = _inputs(mib)
    with signing_workdir("bench-download-") as (work, key):
        gpg_home = work / "verify-home"
        try:
            _run(mib, plain, xz, work=work, key=key, gpg_home=gpg_home)
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", str(gpg_home), "--kill", "all"],
                capture_output=True,
                check=False,
            )
    return 0


def _run(mib: int, plain: Path, xz: Path, *, work: Path, key: SigningKey, gpg_home: Path) -> None:
    """The comparisons, with the artifacts signed by `key` and the baselines' gpg
    trusting it from its own home `gpg_home`."""
    for art in (plain, xz):
        key.sign(art, work / f"{art.name}.sig")
    gpg_home.mkdir(mode=0o700)
    subprocess.run(
        ["gpg", "--homedir", gpg_home, "--batch", "--quiet", "--import", key.public],
        check=True,
        capture_output=True,
    )
    env = python_env()
    ours = [sys.executable, "-m", "nestos_inst", "download", "--keyring", str(key.public)]
    a, b = work / "a", work / "b"
    a.mkdir()
    b.mkdir()
    sig = work / f"{plain.name}.sig"

    def clean() -> None:
        for d in (a, b):
            for f in d.iterdir():
                f.unlink()

    print(f"artifact {mib} MiB; xz {xz.stat().st_size / MIB:.0f} MiB -> {mib} MiB")
    with http_server() as srv:
        for art in (plain, xz):
            srv.add(f"/{art.name}", art)
            srv.add(f"/{art.name}.sig", work / f"{art.name}.sig")
        url_plain, url_xz = srv.url(f"/{plain.name}"), srv.url(f"/{xz.name}")
        r1 = compare(
            "download+verify vs curl -o + gpg --verify",
            lambda: _ours([*ours, "-C", str(b), "-u", url_plain], env),
            lambda: _curl_then_gpg(url_plain, a / plain.name, sig, gpg_home),
            goal=0.9,
            setup=clean,
        )
        compare(
            "curl | gpg --verify - vs curl -o + gpg --verify (reference)",
            lambda: _curl_gpg(url_plain, gpg_home, sig),
            lambda: _curl_then_gpg(url_plain, a / plain.name, sig, gpg_home),
            goal=None,
            setup=clean,
            note="what overlapping fetch and gpg can reach, no file written",
        )
        r2 = compare(
            "download -d vs curl | xz -dc",
            lambda: _ours([*ours, "-d", "-C", str(b), "-u", url_xz], env),
            lambda: _pipeline(url_xz, a / "image.raw"),
            goal=0.95,
            setup=clean,
        )
    limit(
        "download peak RSS",
        max(r1.ours_rss_mib, r2.ours_rss_mib),
        RSS_LIMIT_MIB,
        unit="MiB",
    )


if __name__ == "__main__":
    sys.exit(main())
