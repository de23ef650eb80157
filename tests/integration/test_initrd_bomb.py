"""Decompression bombs: initrds of a few hundred KB that declare members of gigabytes.

`dev show initrd` and `dev extract initrd` stream: their peak RSS (measured on the real
CLI process with wait4's rusage) stays bounded whatever the declared member size, the
listing is right and extraction writes the right bytes; commands that keep members in
memory (`pxe ignition unwrap`) refuse an oversized member with a clear error.
"""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.helpers.cli import REPO

GIB = 1 << 30
MIB = 1 << 20
# The interpreter, our modules and zstandard take ~30 MiB; the members themselves must
# add nothing proportional to their size.
RSS_LIMIT_KIB = 100 * 1024


def _newc(name: str, size: int, mode: int = 0o100644) -> bytes:
    """A newc header + name (+ padding) for a member of `size` bytes."""
    raw = name.encode() + b"\0"
    fields = (1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(raw), 0)
    head = b"070701" + b"".join(b"%08x" % f for f in fields) + raw
    return head + bytes(-len(head) % 4)


TRAILER = _newc("TRAILER!!!", 0, 0)


def _zstd_zeros(prefix: bytes, zeros: int, suffix: bytes) -> bytes:
    """One zstd frame: raw blocks for prefix/suffix, RLE blocks for the zeros (4 bytes
    per 128 KiB decoded), so a 2 GiB member costs 64 KiB and no compression time."""
    out = bytearray(b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([(17 - 10) << 3]))  # window 128K

    def raw(data: bytes, last: int = 0) -> None:
        out.extend(((len(data) << 3) | last).to_bytes(3, "little") + data)

    raw(prefix)
    block = 128 * 1024
    while zeros:
        n = min(block, zeros)
        out.extend(((n << 3) | (1 << 1)).to_bytes(3, "little") + b"\x00")
        zeros -= n
    raw(suffix, last=1)
    return bytes(out)


def _stream(compress: zlib._Compress | lzma.LZMACompressor, parts: list[bytes | int]) -> bytes:
    """Compress bytes and runs of zeros (ints) without materialising the zeros."""
    out = []
    zero = bytes(MIB)
    for part in parts:
        if isinstance(part, int):
            for _ in range(part // MIB):
                out.append(compress.compress(zero))
            out.append(compress.compress(bytes(part % MIB)))
        else:
            out.append(compress.compress(part))
    out.append(compress.flush())
    return b"".join(out)


# wait4's ru_maxrss of a child counts the memory image it was forked with, so a child
# forked straight from a big pytest process would report pytest's size. A small
# interpreter forks the CLI instead and reports the CLI's own peak to a file.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "nestos_inst", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(*args: str | os.PathLike[str], cwd: Path) -> tuple[int, bytes, int]:
    """Run the CLI with stdout to a file; (exit code, stderr + stdout, the CLI process's
    own peak RSS in KiB)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C")
    out_path, rss_path = cwd / ".stdout", cwd / ".maxrss"
    with open(out_path, "wb") as out:
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, rss_path, *(os.fspath(a) for a in args)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            timeout=600,
            check=False,
        )
    return proc.returncode, proc.stderr + b"\n" + out_path.read_bytes(), int(rss_path.read_text())


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    small = _newc("etc/small.conf", 6) + b"small\n" + bytes(2)
    paths = {}
    # 2 GiB of zeros in one member, then a small file: ~64 KiB of zstd.
    big = _newc("big.img", 2 * GIB)
    paths["zstd-2g"] = d / "zstd-2g.img"
    paths["zstd-2g"].write_bytes(_zstd_zeros(big, 2 * GIB, small + TRAILER))
    # gzip and xz members of a few hundred MiB (compressing zeros costs time here).
    gz = _stream(
        zlib.compressobj(1, wbits=31), [_newc("big.img", 256 * MIB), 256 * MIB, small, TRAILER]
    )
    paths["gzip-256m"] = d / "gzip-256m.img"
    paths["gzip-256m"].write_bytes(gz)
    xz = _stream(
        lzma.LZMACompressor(preset=0), [_newc("big.img", 128 * MIB), 128 * MIB, small, TRAILER]
    )
    paths["xz-128m"] = d / "xz-128m.img"
    paths["xz-128m"].write_bytes(xz)
    # A config.ign that declares 2 GiB, for the commands that keep members in memory.
    paths["ign-2g"] = d / "ign-2g.img"
    paths["ign-2g"].write_bytes(_zstd_zeros(_newc("config.ign", 2 * GIB), 2 * GIB, TRAILER))
    return paths


@pytest.mark.parametrize("kind", ["zstd-2g", "gzip-256m", "xz-128m"])
def test_show_streams(tmp_path: Path, bombs: dict[str, Path], kind: str) -> None:
    assert bombs[kind].stat().st_size < 2 * MIB
    code, output, rss = _run_measured("dev", "show", "initrd", bombs[kind], cwd=tmp_path)
    assert code == 0, output
    assert output.split(b"\n", 1)[1] == b"big.img\netc/small.conf\n"
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"


def test_extract_skips_big_member_in_bounded_memory(tmp_path: Path, bombs: dict[str, Path]) -> None:
    out = tmp_path / "out"
    code, output, rss = _run_measured(
        "dev", "extract", "initrd", "-C", out, bombs["zstd-2g"], "etc/*", cwd=tmp_path
    )
    assert code == 0, output
    assert (out / "etc" / "small.conf").read_bytes() == b"small\n"
    assert sorted(p.name for p in out.rglob("*")) == ["etc", "small.conf"]
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"


def test_extract_big_member_streams_to_disk(tmp_path: Path, bombs: dict[str, Path]) -> None:
    out = tmp_path / "out"
    code, output, rss = _run_measured(
        "dev", "extract", "initrd", "-C", out, bombs["gzip-256m"], cwd=tmp_path
    )
    assert code == 0, output
    big = out / "big.img"
    assert big.stat().st_size == 256 * MIB
    with big.open("rb") as f:
        while block := f.read(8 * MIB):
            assert block.count(0) == len(block)
    assert (out / "etc" / "small.conf").read_bytes() == b"small\n"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # staging gone
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"


def test_in_memory_commands_refuse_huge_member(tmp_path: Path, bombs: dict[str, Path]) -> None:
    code, output, rss = _run_measured("pxe", "ignition", "unwrap", bombs["ign-2g"], cwd=tmp_path)
    assert code == 1
    err = output.decode()
    assert err.startswith("Error: reading initrd ")
    assert "archive member config.ign is 2147483648 bytes" in err
    assert "Traceback" not in output.decode(errors="replace")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
