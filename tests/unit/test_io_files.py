"""io/files.py: bounded reads and all-or-nothing outputs, on real files and FIFOs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nestos_inst.errors import NestosError, chain
from nestos_inst.io.files import (
    Created,
    atomic_output,
    create_new,
    read_limited,
    write_file,
)
from nestos_inst.service.cmdline import Cmdline


def test_limit_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_limited(path, 100) == b"x" * 100
    with pytest.raises(NestosError) as info:
        read_limited(path, 99)
    assert chain(info.value) == [f"reading {path}", f"{path} is larger than the limit of 99 bytes"]


def test_endless_device_stops_at_the_limit() -> None:
    with pytest.raises(NestosError, match="reading /dev/zero") as info:
        read_limited("/dev/zero", 1 << 20)
    assert chain(info.value)[-1] == "/dev/zero is larger than the limit of 1 MiB"


def test_fifo_is_read_to_its_end_or_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "p"
    os.mkfifo(fifo)

    def writer(data: bytes) -> None:
        with open(fifo, "wb") as f:
            try:
                f.write(data)
            except BrokenPipeError:
                pass

    t = threading.Thread(target=writer, args=(b"small",))
    t.start()
    assert read_limited(fifo, 10) == b"small"
    t.join()
    t = threading.Thread(target=writer, args=(b"y" * 100_000,))
    t.start()
    with pytest.raises(NestosError, match="reading"):
        read_limited(fifo, 1000)
    t.join()


def test_directory_and_missing(tmp_path: Path) -> None:
    with pytest.raises(NestosError) as info:
        read_limited(tmp_path, 10)
    assert "Is a directory (os error 21)" in chain(info.value)
    with pytest.raises(NestosError) as info:
        read_limited(tmp_path / "nope", 10, message="opening thing")
    assert chain(info.value) == ["opening thing", "No such file or directory (os error 2)"]


def test_kernel_command_line_file_is_bounded() -> None:
    with pytest.raises(NestosError, match="reading kernel command line /dev/zero"):
        Cmdline.read("/dev/zero")


def test_replace_keeps_the_old_file_until_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(out) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]
    write_file(out, b"new", mode=0o600)
    assert out.read_bytes() == b"new"
    assert out.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["out"]


def test_create_new_never_clobbers(tmp_path: Path) -> None:
    existing = tmp_path / "e"
    existing.write_bytes(b"mine")
    dangling = tmp_path / "d"
    dangling.symlink_to(tmp_path / "nowhere")
    for path in (existing, dangling):
        with pytest.raises(NestosError) as info:
            create_new(path, b"x")
        assert "File exists (os error 17)" in chain(info.value)
    assert existing.read_bytes() == b"mine"
    assert not (tmp_path / "nowhere").exists()
    assert sorted(os.listdir(tmp_path)) == ["d", "e"]


def test_created_removes_files_and_new_dirs_on_failure(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    with pytest.raises(NestosError), Created() as created:
        created.makedirs(str(keep / "a" / "b"))
        create_new(keep / "a" / "b" / "one", b"1")
        created.add(str(keep / "a" / "b" / "one"))
        create_new(keep / "a" / "b" / "one", b"again")  # File exists
    assert os.listdir(keep) == []
    with Created() as created:
        created.makedirs(str(keep / "x"))
        create_new(keep / "x" / "f", b"1")
        created.add(str(keep / "x" / "f"))
    assert (keep / "x" / "f").read_bytes() == b"1"
