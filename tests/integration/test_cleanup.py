"""The test helpers release loop devices and mounts when a run is interrupted.

An interrupted run must not leave a loop device or a mount behind (a later run, or
another suite on the same machine, would trip over it). Ctrl-C arrives as
KeyboardInterrupt; SIGTERM/SIGHUP are turned into the same by tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.loop import deferred_signals, loop_device, mounted

pytestmark = pytest.mark.root
MiB = 1 << 20


def _attached(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_signals_are_held_until_the_block_ends() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        signal.raise_signal(signal.SIGINT)
        done.append("clean-up finished")
    assert done == ["clean-up finished"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_test_releases_its_devices(tmp_path: Path, sig: signal.Signals) -> None:
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    where: list[Path] = []
    with (
        pytest.raises(KeyboardInterrupt),
        loop_device(img, partitions=False) as dev,
        mounted(dev) as mnt,
    ):
        where.append(mnt)
        assert os.path.ismount(mnt) and dev in _attached(img)
        signal.raise_signal(sig)  # as if the run were stopped here
    assert _attached(img) == ""
    assert not where[0].exists()
