"""Download + verify throughput from 127.0.0.1 against curl/gpg/xz baselines (same run).

1. `download -u URL` (fetch + streaming GPG verify + write + fsync) vs `curl -o file`
   followed by `gpg --verify` (sequential). Goal: ratio >= 0.9.
2. `download -d -u URL.xz` vs `curl URL.xz | xz -dc > file`. Goal: ratio >= 0.95.
Peak RSS of our process (wait4 rusage) must stay <= 100 MiB.
Ratio = baseline seconds / our seconds (higher is better). Inputs are cached in
/var/tmp/nestos-bench-cache keyed by their recipe; BENCH_DOWNLOAD_MIB resizes them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.gpgkey import SigningKey, make_key
from tests.helpers.httpserver import http_server

REPO = Path(__file__).resolve().parents[1]
CACHE = Path("/var/tmp/nestos-bench-cache")
MIB = 1 << 20
RSS_LIMIT_MIB = 100


def _image(path: Path, size: int) -> None:
    """A disk-like mix: random (incompressible) runs, zero runs and text runs."""
    rnd = random.Random(1)  # noqa: S311 - reproducible bench data
    text = b"".join(f"line {i}: nestos installer benchmark payload\n".encode() for i in range(2048))
    with open(path, "wb") as f:
        written = 0
        while written < size:
            kind = rnd.random()
            block = 4 * MIB
            if kind < 0.5:
                data = rnd.randbytes(block)
            elif kind < 0.75:
                data = bytes(block)
            else:
                data = (text * (block // len(text) + 1))[:block]
            data = data[: size - written]
            f.write(data)
            written += len(data)


def _inputs(mib: int) -> tuple[Path, Path, Path]:
    """(plain artifact, xz artifact, key dir) built once and cached."""
    d = CACHE / f"download-v1-{mib}m"
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


def _timed(argv: list[str], **kw: object) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child, measured with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with {proc.returncode}")
    return elapsed, int(usage.ru_maxrss)


def _pipeline(url: str, out: Path) -> float:
    start = time.perf_counter()
    with open(out, "wb") as f:
        curl = subprocess.Popen(["curl", "-sSf", url], stdout=subprocess.PIPE)
        xz = subprocess.run(["xz", "-dc"], stdin=curl.stdout, stdout=f, check=True)
        assert curl.stdout is not None
        curl.stdout.close()
        if curl.wait() != 0 or xz.returncode != 0:
            raise RuntimeError("baseline pipeline failed")
    return time.perf_counter() - start


def main() -> int:
    mib = int(os.environ.get("BENCH_DOWNLOAD_MIB", "512"))
    plain, xz, _ = _inputs(mib)
    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir="/var/tmp"))
    key: SigningKey | None = None
    try:
        key = make_key(work / "key")
        for art in (plain, xz):
            key.sign(art, work / f"{art.name}.sig")
        gpg_home = work / "verify-home"
        gpg_home.mkdir(mode=0o700)
        subprocess.run(
            ["gpg", "--homedir", gpg_home, "--batch", "--quiet", "--import", key.public],
            check=True,
            capture_output=True,
        )
        env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C")
        ours = [sys.executable, "-m", "nestos_inst", "download", "--keyring", str(key.public)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        with http_server() as srv:
            for art in (plain, xz):
                srv.add(f"/{art.name}", art)
                srv.add(f"/{art.name}.sig", work / f"{art.name}.sig")
            url_plain, url_xz = srv.url(f"/{plain.name}"), srv.url(f"/{xz.name}")
            a = work / "a"
            b = work / "b"
            a.mkdir()
            b.mkdir()

            # 1. download + verify
            t_curl, _ = _timed(["curl", "-sSf", "-o", str(a / plain.name), url_plain])
            shutil.copy(work / f"{plain.name}.sig", a / f"{plain.name}.sig")
            t_gpg, _ = _timed(
                [
                    "gpg",
                    "--homedir",
                    str(gpg_home),
                    "--batch",
                    "--quiet",
                    "--verify",
                    str(a / f"{plain.name}.sig"),
                    str(a / plain.name),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            t_ours, rss1 = _timed([*ours, "-C", str(b), "-u", url_plain], **quiet)
            assert (b / plain.name).stat().st_size == plain.stat().st_size
            base1 = t_curl + t_gpg
            (a / plain.name).unlink()
            (b / plain.name).unlink()

            # 2. download -d (xz)
            t_pipe = _pipeline(url_xz, a / "image.raw")
            t_ours_d, rss2 = _timed([*ours, "-d", "-C", str(b), "-u", url_xz], **quiet)
            assert (b / "image.raw").stat().st_size == (a / "image.raw").stat().st_size

        rate = mib / t_ours
        print(f"artifact {mib} MiB (plain), xz {xz.stat().st_size / MIB:.0f} MiB -> {mib} MiB")
        print(
            f"download+verify: ours {t_ours:.2f}s ({rate:.0f} MiB/s) vs curl {t_curl:.2f}s "
            f"+ gpg --verify {t_gpg:.2f}s = {base1:.2f}s -> ratio {base1 / t_ours:.2f} "
            f"(goal >= 0.90)"
        )
        print(
            f"download -d:     ours {t_ours_d:.2f}s vs curl | xz -dc {t_pipe:.2f}s -> ratio "
            f"{t_pipe / t_ours_d:.2f} (goal >= 0.95)"
        )
        peak = max(rss1, rss2) / 1024
        print(
            f"peak RSS: {rss1 / 1024:.0f} MiB / {rss2 / 1024:.0f} MiB (limit {RSS_LIMIT_MIB} MiB)"
        )
        return 0 if peak <= RSS_LIMIT_MIB else 1
    finally:
        if key is not None:
            key.close()
        subprocess.run(
            ["gpgconf", "--homedir", str(work / "verify-home"), "--kill", "all"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
