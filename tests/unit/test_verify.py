"""GPGME streaming verification: upstream vectors (docs/compat.md#signatures) and per-session real
keys."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from nestos_inst.errors import VerifyError
from nestos_inst.verify import (
    ENGINE_DIED,
    FAILURE,
    GpgHome,
    StreamVerifier,
    require,
    verify_file,
    verify_stream,
)
from tests.helpers.gpgkey import SigningKey


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def leftover_homes() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("nestos-installer-")}


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GnuPG homes go to a per-test TMPDIR so leftovers are ours (/tmp is shared)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))


@pytest.fixture
def signed(tmp_path: Path, signing_key: SigningKey) -> tuple[Path, bytes]:
    data = bytes(range(256)) * 4096 + b"tail"
    path = tmp_path / "image.raw"
    path.write_bytes(data)
    return path, signing_key.sign(path).read_bytes()


def test_good_signature_streamed_in_odd_chunks(
    signed: tuple[Path, bytes], signing_key: SigningKey
) -> None:
    path, sig = signed
    before = leftover_homes()
    result = verify_stream(chunks(path.read_bytes(), 7777), sig, [signing_key.public])
    assert result.ok, result.reason
    assert result.signatures[0].fpr in {signing_key.fingerprint}
    assert "gpg: Good signature from" in result.status_text
    assert leftover_homes() == before


def test_repeated_checks_stay_ok(signed: tuple[Path, bytes], signing_key: SigningKey) -> None:
    path, sig = signed
    for _ in range(2):
        assert verify_file(path, sig, [signing_key.public]).ok


def test_flipped_last_byte_fails(signed: tuple[Path, bytes], signing_key: SigningKey) -> None:
    path, sig = signed
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    result = verify_stream([bytes(data)], sig, [signing_key.public])
    assert not result.ok
    assert result.reason == "bad signature"
    assert "BAD signature" in result.status_text
    with pytest.raises(VerifyError, match=FAILURE):
        require(result)


def test_truncated_data_fails(signed: tuple[Path, bytes], signing_key: SigningKey) -> None:
    path, sig = signed
    assert not verify_stream([path.read_bytes()[:1000]], sig, [signing_key.public]).ok


def test_unknown_key_fails(
    signed: tuple[Path, bytes], signing_key: SigningKey, other_key: SigningKey
) -> None:
    path, _ = signed
    sig = other_key.sign(path, path.with_name("other.sig")).read_bytes()
    result = verify_file(path, sig, [signing_key.public])
    assert not result.ok
    assert result.reason == "no public key"
    assert "No public key" in result.status_text


def test_no_trusted_keys_says_how_to_add_one(signed: tuple[Path, bytes]) -> None:
    path, sig = signed
    result = verify_file(path, sig, [])
    assert not result.ok
    assert "--keyring" in (result.reason or "")


def test_garbage_signature(signed: tuple[Path, bytes], signing_key: SigningKey) -> None:
    path, _ = signed
    result = verify_file(path, b"not a signature at all", [signing_key.public])
    assert not result.ok
    assert result.signatures == ()


def test_empty_data_with_garbage_signature_does_not_hang(signing_key: SigningKey) -> None:
    assert not verify_stream([], b"\x00" * 10, [signing_key.public]).ok


def test_abort_midway_cleans_up(signed: tuple[Path, bytes], signing_key: SigningKey) -> None:
    path, sig = signed
    before = leftover_homes()
    verifier = StreamVerifier(sig, [signing_key.public])
    for block in chunks(path.read_bytes(), 1 << 16)[:20]:
        verifier.update(block)
    verifier.close()
    verifier.close()
    assert leftover_homes() == before


def test_home_is_private_and_trusts_subkeys(signing_key: SigningKey) -> None:
    home = GpgHome([signing_key.public])
    try:
        assert (home.path.stat().st_mode & 0o777) == 0o700
        assert signing_key.fingerprint in home.trusted
    finally:
        home.close()
    assert not home.path.exists()


def test_bad_keyring_files(tmp_path: Path) -> None:
    from nestos_inst.errors import NestosError

    junk = tmp_path / "junk.asc"
    junk.write_text("hello\n")
    with pytest.raises(NestosError, match="no OpenPGP public key found in"):
        GpgHome([junk])
    with pytest.raises(NestosError, match="reading keyring"):
        GpgHome([tmp_path / "missing.asc"])


@pytest.mark.compat
@pytest.mark.parametrize("name", ["1M.gz", "1M.xz", "1M.zst"])
def test_upstream_vectors(upstream: Path, name: str) -> None:
    vdir = upstream / "verify"
    key = vdir / "test-key.pub.asc"
    data = (vdir / name).read_bytes()
    sig = (vdir / f"{name}.sig").read_bytes()
    assert verify_stream(chunks(data, 100), sig, [key]).ok
    assert not verify_stream([data + b"\0"], sig, [key]).ok
    assert not verify_stream([data[:-1] + bytes([data[-1] ^ 1])], sig, [key]).ok


@pytest.mark.compat
def test_upstream_zero_mib_and_random_key(upstream: Path) -> None:
    vdir = upstream / "verify"
    key = vdir / "test-key.pub.asc"
    zeros = bytes(1 << 20)
    assert verify_stream([zeros], (vdir / "1M.sig").read_bytes(), [key]).ok
    priv = (vdir / "test-key.priv.asc").read_bytes()
    assert verify_stream([priv], (vdir / "test-key.priv.asc.sig").read_bytes(), [key]).ok
    assert not verify_stream([priv[:1000]], (vdir / "test-key.priv.asc.sig").read_bytes(), [key]).ok
    random = verify_stream([priv], (vdir / "test-key.priv.asc.random.sig").read_bytes(), [key])
    assert not random.ok
    assert random.reason == "no public key"


def _engine_pid(home: Path, timeout: float = 10.0) -> int:
    """The gpg GPGME spawned for this home (GPGME detaches it: not our child)."""
    import time

    deadline = time.monotonic() + timeout
    needle = str(home).encode()
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in argv and b"--verify" in argv:
                return int(entry)
        time.sleep(0.01)
    raise AssertionError("gpg --verify did not start")


def signalled_mid_stream(
    key_public: Path, sig: bytes, data: bytes, feed: str, signum: str, *, stall: float
) -> tuple[bool, str | None, Path]:
    """Feed `data`, send `signum` to gpg after 4 MiB, feed the rest: (ok, reason, home)."""
    import signal

    from nestos_inst import verify
    from nestos_inst.io import kernel
    from tests.unit.test_net_kernel import feed as feed_fanout

    verify.STALL_SECONDS = stall  # the bound, shrunk for tests
    verifier = StreamVerifier(sig, [key_public])
    home = verifier._home.path
    try:
        verifier.update(data[: 4 << 20])
        os.kill(_engine_pid(home), getattr(signal, signum))
        view = memoryview(data)[4 << 20 :]
        if feed == "tee" and kernel.zero_copy_available():
            tap = verifier.tap()
            assert tap is not None
            sink = os.open(os.devnull, os.O_WRONLY)
            try:
                # A stuck GPGME stops draining the tap: Fanout drops it after `stall`.
                feed_fanout(kernel.Fanout([tap], sink, stall=stall), bytes(view))
            finally:
                os.close(sink)
        else:
            for part in chunks(bytes(view), 1 << 20):
                verifier.update(part)
        result = verifier.finish()
    finally:
        verifier.close()
    return result.ok, result.reason, home


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("feed", ["update", "tee"])
def test_group_signals_do_not_kill_gpg(
    tmp_path: Path, signing_key: SigningKey, feed: str, signum: str
) -> None:
    """Ctrl-C / a service stop reach gpg too (same process group): gpg is started
    with them blocked and carries on, so the result is the true one (the command's
    own clean-up ends gpg through its input)."""
    data = os.urandom(1 << 20) * 24
    path = tmp_path / "big.raw"
    path.write_bytes(data)
    sig = signing_key.sign(path).read_bytes()
    before = leftover_homes()
    ok, reason, home = signalled_mid_stream(signing_key.public, sig, data, feed, signum, stall=30.0)
    assert ok, reason
    assert not home.exists()
    assert leftover_homes() == before


@pytest.mark.parametrize("feed", ["update", "tee"])
def test_gpg_killed_mid_stream_fails_instead_of_hanging(
    tmp_path: Path, signing_key: SigningKey, feed: str
) -> None:
    """A gpg killed outright (OOM killer, kill -9): a failed result within the stall
    bound, never a hang, though GPGME 1.18 may poll a dead engine's pipe forever.
    Run in a child process: a GPGME loop that ignores the cancel stays behind on its
    daemon thread until that process exits (as the failing command would)."""
    import json
    import subprocess
    import sys

    data = tmp_path / "big.raw"
    data.write_bytes(os.urandom(1 << 20) * 48)
    sig = signing_key.sign(data)
    code = (
        "import json, sys; from pathlib import Path;"
        "from tests.unit.test_verify import signalled_mid_stream as f;"
        "ok, why, home = f(Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(),"
        " Path(sys.argv[3]).read_bytes(), sys.argv[4], 'SIGKILL', stall=5.0);"
        "print(json.dumps([ok, why, str(home)]), flush=True)"
    )
    before = leftover_homes()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(signing_key.public), str(sig), str(data), feed],
        capture_output=True,
        timeout=90,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr.decode()
    ok, reason, home = json.loads(proc.stdout)
    assert not ok
    # Either GPGME noticed by itself (no signature reported) or our watch did.
    assert reason in {"no signature found", ENGINE_DIED}, reason
    assert not Path(home).exists()
    assert leftover_homes() == before
