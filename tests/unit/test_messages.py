"""Messages in the user's language: no Python-isms, and NestOS media called NestOS.

Every case runs the real CLI on generated bad input and checks the exact message
and that the input is left as it was. Network failures are worded by the HTTP layer
and tested there.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from tests.helpers.cli import run_cli
from tests.helpers.isomedia import LiveIsoSpec, build_live_iso

# What Python's own libraries say, which a user of the installer should never read.
PYTHONISMS = re.compile(
    r"Errno|Expecting |\(char \d+\)|<byte string>|<unicode string>|Traceback|invalid literal"
    r"|codec can't|NoneType|has no attribute|show program's|Connect call failed"
)


def _err(*args: str | Path) -> tuple[int, str]:
    proc = run_cli(*args)
    err = proc.stderr.decode()
    assert not PYTHONISMS.search(err), err
    return proc.returncode, err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("profile", "brand"), [(profiles.NESTOS, "NestOS"), (profiles.COREOS, "CoreOS")]
)
def test_iso_messages_name_the_media_brand(tmp_path: Path, profile: profiles.Profile,
                                           brand: str) -> None:  # fmt: skip
    iso = build_live_iso(tmp_path / "live.iso", LiveIsoSpec(profile=profile, kargs="none"))
    before = _sha(iso.path)
    rc, err = _err("iso", "kargs", "modify", "-a", "x", iso.path)
    assert rc == 1
    # CoreOS media keep upstream's exact text (its test scripts look for it).
    assert err == f"Error: No karg embed areas found; old or corrupted {brand} ISO image.\n"
    assert _sha(iso.path) == before


def test_bad_ignition_json(tmp_path: Path) -> None:
    ign = tmp_path / "c.ign"
    ign.write_text("{bad: 1}\n")
    target = tmp_path / "disk.img"
    target.write_bytes(b"keep")
    img = tmp_path / "img.raw"
    img.write_bytes(bytes(4096))
    rc, err = _err("install", target, "-f", img, "--insecure", "-i", ign)
    assert rc == 1
    assert err == (
        "Error: parsing specified Ignition config\n\nCaused by:\n"
        "    not valid JSON: expected a quoted property name at line 1, column 2\n"
    )
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("a: [\n", "expected the node content, but found '<stream end>' at line 2 column 1"),
        ("image-url: x\n  y: z\n", "mapping values are not allowed here at line 2 column 4"),
    ],
)
def test_bad_yaml_config(tmp_path: Path, text: str, cause: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    rc, err = _err("install", "-c", cfg, tmp_path / "disk.img")
    assert rc == 1
    assert err.startswith(f"Error: parsing config file {cfg}\n\nCaused by:\n    {cause}")
    assert len(err.splitlines()) == 4  # one line of cause, no excerpt of the file
    assert not (tmp_path / "disk.img").exists()


def test_bad_json_in_iso_metadata(tmp_path: Path) -> None:
    iso = build_live_iso(
        tmp_path / "live.iso",
        LiveIsoSpec(extra_files={"nestos/igninfo.json": b'{"file": "images/ignition.img",}'}),
    )
    before = _sha(iso.path)
    rc, err = _err("iso", "ignition", "show", iso.path)
    assert rc == 1
    cause = "not valid JSON: expected a quoted property name at line 1, column 32"
    assert err == f"Error: decoding igninfo\n\nCaused by:\n    {cause}\n"
    assert _sha(iso.path) == before


@pytest.mark.parametrize(
    "args",
    [
        ("install", "/nonexistent-disk", "-f", "/nonexistent.raw", "--insecure"),
        ("install", "x.img", "--save-partindex", "x", "-f", "y", "--insecure"),
        ("iso", "kargs", "show", "/nonexistent.iso"),
        ("pxe", "ignition", "unwrap", "/nonexistent.img"),
        ("pxe", "network", "wrap", "-k", "/nonexistent", "-o", "/nonexistent-dir/x"),
        ("install", "--fetch-retries", "many", "x"),
        ("bogus",),
    ],
)
def test_no_pythonisms(args: tuple[str, ...]) -> None:
    rc, err = _err(*args)
    assert rc in (1, 2)
    assert err.strip()
