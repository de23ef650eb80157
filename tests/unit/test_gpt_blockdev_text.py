"""Parsers for lsblk/blkid/udev text (docs/compat.md#reference-results blockdev lsblk_split,
blkid_split*)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nestos_inst.disk.blockdev import parse_blkid_line, parse_export, parse_lsblk_pairs


def test_lsblk_split() -> None:
    line = r'NAME="/dev/sda1" LABEL="" FSTYPE="ext4" MOUNTPOINT="/a\x22b" UUID="1-2"'
    assert parse_lsblk_pairs(line) == {
        "NAME": "/dev/sda1",
        "FSTYPE": "ext4",
        "MOUNTPOINT": r"/a\x22b",
        "UUID": "1-2",
    }
    assert parse_lsblk_pairs("") == {}
    assert parse_lsblk_pairs('A="with space" B="x"') == {"A": "with space", "B": "x"}


def test_blkid_split() -> None:
    assert parse_blkid_line('/dev/sda1: LABEL="boot" UUID="u-1" TYPE="ext4"') == {
        "NAME": "/dev/sda1",
        "LABEL": "boot",
        "UUID": "u-1",
        "TYPE": "ext4",
    }
    assert parse_blkid_line("") == {}
    assert parse_blkid_line(" : ") == {}
    assert parse_blkid_line(': UUID="x"') == {}
    assert parse_blkid_line("/dev/empty:") == {"NAME": "/dev/empty"}


def test_export() -> None:
    text = "DEVNAME=/dev/loop0p1\nLABEL=boot\nTYPE=ext4\nEMPTY=\nnoise\n"
    assert parse_export(text) == {"DEVNAME": "/dev/loop0p1", "LABEL": "boot", "TYPE": "ext4"}
    assert parse_export("S:disk/by-label/x\nE:ID_FS_LABEL=x=y\n") == {"ID_FS_LABEL": "x=y"}


@given(st.text())
def test_parsers_never_raise(text: str) -> None:
    parse_lsblk_pairs(text)
    parse_blkid_line(text)
    parse_export(text)
