"""The `iso` commands end to end on xorriso-built NestOS/CoreOS live ISOs.

Most invocations run the CLI in-process (`run_main`) for speed; the behaviours that
depend on a real process (TTY refusal, exit status, argparse) use `run_cli`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from tests.helpers.cli import run_cli
from tests.helpers.isomedia import (
    CONFIG,
    LiveIsoSpec,
    Media,
    build_live_iso,
    build_plain_iso,
    fail,
    ignition_from_area,
    ok,
    run_main,
    sha,
    temps,
)


@pytest.fixture(params=[profiles.NESTOS, profiles.COREOS], ids=["nestos", "coreos"])
def media(request: pytest.FixtureRequest, tmp_path: Path) -> Media:
    prof: profiles.Profile = request.param
    spec = LiveIsoSpec(profile=prof, igninfo="file" if prof is profiles.NESTOS else "slice")
    return Media(build_live_iso(tmp_path / "live.iso", spec), tmp_path)


def test_ignition_embed_show_remove(media: Media, tmp_path: Path) -> None:
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(CONFIG)
    embedded = media.all_modes("iso", "ignition", "embed", input=CONFIG)
    assert sha(media.all_modes("iso", "ignition", "embed", "-i", str(cfg))) == sha(embedded)
    assert ok(run_main("iso", "ignition", "show", str(embedded))).stdout == CONFIG
    # The raw area decodes with the real tools too.
    area = embedded.read_bytes()[media.built.initrd_offset :][: media.built.initrd_length]
    assert ignition_from_area(area) == CONFIG
    media.all_fail(
        "This ISO image already has an embedded Ignition config; use -f to force.",
        "iso", "ignition", "embed", "-i", str(cfg), src=embedded,
    )  # fmt: skip
    forced = media.all_modes("iso", "ignition", "embed", "-f", "-i", str(cfg), src=embedded)
    assert sha(forced) == sha(embedded)
    removed = media.all_modes("iso", "ignition", "remove", src=embedded)
    assert sha(removed) == media.original
    fail(run_main("iso", "ignition", "show", str(removed)), "No embedded Ignition config.")


def test_config_too_large(media: Media, tmp_path: Path) -> None:
    big = tmp_path / "big.ign"
    big.write_bytes(os.urandom(media.built.initrd_length + 1000))
    media.all_fail("too large", "iso", "ignition", "embed", "-i", str(big))


def test_network(media: Media, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "a.nmconnection").write_bytes(b"[connection]\nid=a\n")
    (keys / "b.nmconnection").write_bytes(b"[connection]\nid=b\n")
    ka, kb = str(keys / "a.nmconnection"), str(keys / "b.nmconnection")
    net = media.all_modes("iso", "network", "embed", "-k", kb, "-k", ka)
    out = ok(run_main("iso", "network", "extract", str(net))).stdout
    assert out == (
        b"########## a.nmconnection ##########\n[connection]\nid=a\n"
        b"\n########## b.nmconnection ##########\n[connection]\nid=b\n"
    )
    dest = tmp_path / "extract"
    res = ok(run_main("iso", "network", "extract", "-C", str(dest), str(net)))
    assert res.stdout.decode().splitlines() == [
        str(dest / "a.nmconnection"),
        str(dest / "b.nmconnection"),
    ]
    assert (dest / "a.nmconnection").read_bytes() == (keys / "a.nmconnection").read_bytes()
    fail(run_main("iso", "network", "extract", "-C", str(dest), str(net)), "File exists")
    # The live initrd sees the keyfiles under the profile's directory.
    with_ign = media.all_modes("iso", "ignition", "embed", src=net, input=CONFIG)
    fdp = os.open(with_ign, os.O_RDONLY)
    try:
        from nestos_inst.formats.embed import IsoConfig

        members = IsoConfig(fdp).members()
    finally:
        os.close(fdp)
    netdir = media.built.spec.profile.initrd_network_dir
    assert sorted(members) == ["config.ign", f"{netdir}/a.nmconnection", f"{netdir}/b.nmconnection"]
    media.all_fail(
        "This ISO image already has embedded network settings; use -f to force.",
        "iso", "network", "embed", "-k", ka, src=net,
    )  # fmt: skip
    only_a = media.all_modes("iso", "network", "embed", "-f", "-k", ka, src=with_ign)
    assert b"id=b" not in ok(run_main("iso", "network", "extract", str(only_a))).stdout
    assert ok(run_main("iso", "ignition", "show", str(only_a))).stdout == CONFIG
    no_net = media.all_modes("iso", "network", "remove", src=with_ign)
    fail(run_main("iso", "network", "extract", str(no_net)), "No embedded network settings.")
    assert ok(run_main("iso", "ignition", "show", str(no_net))).stdout == CONFIG
    assert sha(media.all_modes("iso", "ignition", "remove", src=no_net)) == media.original
    assert sha(media.all_modes("iso", "network", "remove", src=net)) == media.original
    media.all_fail(
        "multiple input files named 'a.nmconnection'",
        "iso", "network", "embed", "-k", ka, "-k", ka,
    )  # fmt: skip


def test_network_unsupported(tmp_path: Path) -> None:
    media = Media(build_live_iso(tmp_path / "old.iso", LiveIsoSpec(features=None)), tmp_path)
    key = tmp_path / "a.nmconnection"
    key.write_bytes(b"[connection]\n")
    media.all_fail(
        "This OS image does not support customizing network settings.",
        "iso", "network", "embed", "-k", str(key),
    )  # fmt: skip


def test_kargs(media: Media) -> None:
    iso = media.built
    default = iso.default_kargs
    assert ok(run_main("iso", "kargs", "show", str(iso.path))).stdout == default.encode() + b"\n"
    assert (
        ok(run_main("iso", "kargs", "show", "-d", str(iso.path))).stdout.decode() == default + "\n"
    )
    mod = media.all_modes("iso", "kargs", "modify", "-a", "foobar=oldval", "-a", "dodo")
    shown = ok(run_main("iso", "kargs", "show", str(mod))).stdout.decode()
    assert shown == f"{default} foobar=oldval dodo\n"
    assert (
        ok(run_main("iso", "kargs", "show", "--default", str(mod))).stdout.decode()
        == default + "\n"
    )
    rep = media.all_modes("iso", "kargs", "modify", "-r", "foobar=oldval=newval", src=mod)
    assert "foobar=newval dodo" in ok(run_main("iso", "kargs", "show", str(rep))).stdout.decode()
    back = media.all_modes("iso", "kargs", "modify", "-d", "foobar=oldval", "-d", "dodo", src=mod)
    assert sha(back) == media.original
    assert sha(media.all_modes("iso", "kargs", "reset", src=rep)) == media.original
    assert sha(media.all_modes("iso", "kargs", "modify")) == media.original
    # Area 0 ground truth.
    val = media.all_modes("iso", "kargs", "modify", "-a", "foobar=val")
    off = iso.karg_offsets[0]
    body = f"{default} foobar=val\n".encode()
    assert val.read_bytes()[off : off + 1139] == body + b"#" * (1139 - len(body))
    # Longest karg that fits, and one more.
    usable = 1139 - (len(default) + 1) - 1
    longest = media.all_modes("iso", "kargs", "modify", "-a", "x" * usable)
    assert (
        ok(run_main("iso", "kargs", "show", str(longest)))
        .stdout.decode()
        .endswith(" " + "x" * usable + "\n")
    )
    media.all_fail("kargs too large for area", "iso", "kargs", "modify", "-a", "x" * (usable + 1))
    media.all_fail(
        "Wrong input, format should be: KEY=OLD=NEW", "iso", "kargs", "modify", "-r", "a=b"
    )


def test_nul_padded_kargs(tmp_path: Path) -> None:
    spec = LiveIsoSpec(profile=profiles.COREOS, igninfo="slice", pad="\0", end="\0")
    media = Media(build_live_iso(tmp_path / "s390x.iso", spec), tmp_path)
    val = media.all_modes("iso", "kargs", "modify", "-a", "foobar=val")
    body = f"{media.built.default_kargs} foobar=val".encode()
    off = media.built.karg_offsets[0]
    assert val.read_bytes()[off : off + 1139] == body + bytes(1139 - len(body))
    assert sha(media.all_modes("iso", "kargs", "reset", src=val)) == media.original


def test_legacy_header_iso(tmp_path: Path) -> None:
    spec = LiveIsoSpec(profile=profiles.COREOS, igninfo=None, kargs="legacy", features=None)
    media = Media(build_live_iso(tmp_path / "legacy.iso", spec), tmp_path)
    mod = media.all_modes("iso", "kargs", "modify", "-a", "foo")
    assert ok(run_main("iso", "kargs", "show", str(mod))).stdout.decode().endswith(" foo\n")
    both = media.all_modes("iso", "ignition", "embed", src=mod, input=CONFIG)
    assert sha(media.all_modes("iso", "reset", src=both)) == media.original
    # Without the header the same image simply has no karg support.
    plain = media.copy()
    with open(plain, "r+b") as f:
        f.seek(32672)
        f.write(bytes(8))
    fail(run_main("iso", "kargs", "show", str(plain)), "No karg embed areas found")
    ok(run_main("iso", "ignition", "embed", str(plain), input=CONFIG))


def test_reset_and_aliases(media: Media, tmp_path: Path) -> None:
    both = media.all_modes("iso", "ignition", "embed", input=CONFIG)
    both = media.all_modes("iso", "kargs", "modify", "-a", "foo", src=both)
    assert sha(media.all_modes("iso", "reset", src=both)) == media.original
    cfg = tmp_path / "c.ign"
    cfg.write_bytes(CONFIG)
    res = ok(run_main("iso", "embed", "-c", str(cfg), str(media.copy())))
    assert res.stderr == b"`iso embed` is deprecated; use `iso ignition embed`.  Continuing.\n"
    embedded = media.work / f"copy{media.n}.iso"
    res = ok(run_main("iso", "show", str(embedded)))
    assert res.stdout == CONFIG
    assert b"`iso show` is deprecated; use `iso ignition show`.  Continuing." in res.stderr
    res = ok(run_main("iso", "remove", str(embedded)))
    assert b"`iso remove` is deprecated; use `iso ignition remove`." in res.stderr
    assert sha(embedded) == media.original


def test_dev_show_iso(media: Media) -> None:
    iso = media.built
    ign = json.loads(ok(run_main("dev", "show", "iso", "--ignition", str(iso.path))).stdout)
    assert ign == {"offset": iso.initrd_offset, "length": iso.initrd_length}
    kargs = json.loads(ok(run_main("dev", "show", "iso", "--kargs", str(iso.path))).stdout)
    assert [k["offset"] for k in kargs["kargs"]] == iso.karg_offsets
    assert kargs["default"] == iso.default_kargs
    full = json.loads(ok(run_main("dev", "show", "iso", str(iso.path))).stdout)
    assert full["header"]["descriptors"][0]["type"] == "primary"
    assert full["header"]["descriptors"][0]["volume_id"] == "nestos-live"
    assert f"{iso.spec.profile.iso_dir}/KARGS.JSO" in full["records"]
    proc = run_cli("dev", "show", "iso", "--ignition", "--kargs", iso.path)
    assert proc.returncode == 2


def test_non_live_and_truncated(tmp_path: Path) -> None:
    plain = tmp_path / "plain.iso"
    build_plain_iso(plain, {"readme.txt": b"hello\n"})
    media = Media(build_live_iso(tmp_path / "live.iso"), tmp_path)
    media.all_fail("Unrecognized CoreOS ISO image.", "iso", "ignition", "embed", src=plain)
    media.all_fail("Unrecognized CoreOS ISO image.", "iso", "reset", src=plain)
    nokargs = build_live_iso(tmp_path / "nokargs.iso", LiveIsoSpec(kargs="none"))
    assert nokargs.spec.profile.media_name == "NestOS"
    msg = "No karg embed areas found; old or corrupted NestOS ISO image."
    media.all_fail(msg, "iso", "kargs", "modify", "-a", "x", src=nokargs.path)
    media.all_fail(msg, "iso", "kargs", "reset", src=nokargs.path)
    fail(run_main("iso", "kargs", "show", str(nokargs.path)), msg)
    fail(run_main("iso", "kargs", "show", "-d", str(nokargs.path)), msg)
    # iso reset still works without karg areas.
    assert sha(media.all_modes("iso", "reset", src=nokargs.path)) == sha(nokargs.path)
    truncated = tmp_path / "truncated.iso"
    data = media.built.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    media.all_fail("ISO image is incomplete", "iso", "ignition", "embed", src=truncated)
    media.all_fail("ISO image is incomplete", "iso", "kargs", "modify", src=truncated)
    fail(run_main("iso", "ignition", "show", str(tmp_path / "missing.iso")), "No such file")


def test_non_utf8_kargs(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "live.iso")
    with open(built.path, "r+b") as f:
        for off in built.karg_offsets:
            f.seek(off)
            f.write(b"\xff\xfe")
    media = Media(built, tmp_path)
    media.all_fail("invalid UTF-8 in karg area", "iso", "kargs", "modify", "-a", "x")
    fail(run_main("iso", "kargs", "show", str(built.path)), "invalid UTF-8 in karg area")


def test_existing_output_and_tty(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "live.iso")
    out = tmp_path / "exists.iso"
    out.write_bytes(b"keep")
    proc = run_cli("iso", "ignition", "embed", "-o", out, built.path, input=CONFIG)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"Error: persisting output file to {out}\n\nCaused by:\n    File exists (os error 17)\n"
    )
    assert out.read_bytes() == b"keep"
    assert temps(tmp_path) == []
    before = sha(built.path)
    primary, secondary = pty.openpty()
    try:
        proc2 = subprocess.run(
            [
                sys.executable,
                "-m",
                "nestos_inst",
                "iso",
                "kargs",
                "reset",
                "-o",
                "-",
                str(built.path),
            ],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            check=False,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc2.returncode == 1
    assert b"Refusing to write binary data to terminal" in proc2.stderr
    assert sha(built.path) == before


def test_cli_subprocess_round_trip(tmp_path: Path) -> None:
    """One real-process pass so exit codes and stdout plumbing are covered too."""
    built = build_live_iso(tmp_path / "live.iso")
    proc = run_cli("iso", "ignition", "embed", "-o", "-", built.path, input=CONFIG)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "s.iso").write_bytes(proc.stdout)
    proc = run_cli("iso", "ignition", "show", tmp_path / "s.iso")
    assert proc.stdout == CONFIG
    assert run_cli("iso", "kargs").returncode == 2
    assert run_cli("iso", "kargs", "show", "--bogus", built.path).returncode == 2


def _igninfo(obj: object) -> dict[str, bytes]:
    return {"nestos/igninfo.json": json.dumps(obj).encode()}


@pytest.mark.parametrize(
    ("spec", "args", "message"),
    [
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "offset": 1 << 40})),
            ("iso", "ignition", "embed", "-i", "/dev/null"),
            "reading initrd embed area",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "length": 1 << 20})),
            ("iso", "reset"),
            "extends beyond IGNITION.IMG",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "length": 64})),
            ("iso", "ignition", "embed", "-i", "/dev/null"),
            "too large",
        ),
        (
            LiveIsoSpec(
                extra_kargs_json={"files": [{"path": "isolinux/isolinux.cfg", "offset": 1 << 20}]}
            ),
            ("iso", "kargs", "modify", "-a", "x"),
            "reading kargs embed area",
        ),
        (
            LiveIsoSpec(extra_kargs_json={"size": 100}),
            ("iso", "kargs", "reset"),
            "default kargs size",
        ),
        (
            LiveIsoSpec(extra_files={"nestos/kargs.json": b"\xff not json"}),
            ("iso", "ignition", "embed", "-i", "/dev/null"),
            "decoding kargs embed area info",
        ),
    ],
    ids=["ign-offset", "ign-length", "area-too-small", "karg-offset", "karg-size", "karg-json"],
)
def test_bad_metadata_changes_nothing(
    tmp_path: Path, spec: LiveIsoSpec, args: tuple[str, ...], message: str
) -> None:
    media = Media(build_live_iso(tmp_path / "bad.iso", spec), tmp_path)
    media.all_fail(message, *args)


def test_real_tools_read_our_output(tmp_path: Path) -> None:
    """xorriso still reads the edited image; bsdtar and isoinfo see what we embedded."""
    media = Media(build_live_iso(tmp_path / "live.iso"), tmp_path)
    out = media.all_modes("iso", "ignition", "embed", input=CONFIG)
    out = media.run("inplace", "iso", "kargs", "modify", "-a", "console=ttyS0", src=out)
    extracted = tmp_path / "ignition.img"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(out), "-extract",
         "/images/ignition.img", str(extracted)],
        capture_output=True,
        check=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["bsdtar", "-tf", str(extracted)], capture_output=True, check=True
    ).stdout
    assert listing.split() == [b"config.ign"]
    data = subprocess.run(
        ["bsdtar", "-xOf", str(extracted), "config.ign"], capture_output=True, check=True
    ).stdout
    assert data == CONFIG
    grub = subprocess.run(
        ["isoinfo", "-i", str(out), "-x", "/EFI/NESTOS/GRUB.CFG;1"],
        capture_output=True,
        check=True,
    ).stdout
    assert f"{media.built.default_kargs} console=ttyS0\n#".encode() in grub


@pytest.mark.parametrize(
    "args",
    [("iso", "kargs", "show"), ("iso", "ignition", "show"), ("dev", "show", "iso")],
    ids=["kargs-show", "ignition-show", "dev-show-iso"],
)
def test_closed_pipe_is_silent(tmp_path: Path, args: tuple[str, ...]) -> None:
    built = build_live_iso(tmp_path / "live.iso")
    ok(run_main("iso", "ignition", "embed", str(built.path), input=CONFIG))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nestos_inst", *args, str(built.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # no reader left: the first write raises SIGPIPE
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGPIPE
    assert err == b""


@pytest.mark.root
def test_block_device_input(tmp_path: Path) -> None:
    """An ISO written to a disk (loop device here) edits like a file (st_size is 0)."""
    from tests.helpers.loop import loop_device

    media = Media(build_live_iso(tmp_path / "live.iso"), tmp_path)
    expected = sha(media.all_modes("iso", "ignition", "embed", input=CONFIG))
    disk = media.copy()
    with loop_device(disk, partitions=False) as dev:
        assert ok(run_main("iso", "kargs", "show", dev)).stdout.endswith(b"metal\n")
        copy = tmp_path / "from-dev.iso"
        ok(run_main("iso", "ignition", "embed", "-o", str(copy), dev, input=CONFIG))
        streamed = ok(run_main("iso", "ignition", "embed", "-o", "-", dev, input=CONFIG)).stdout
        ok(run_main("iso", "ignition", "embed", dev, input=CONFIG))
        assert ok(run_main("iso", "ignition", "show", dev)).stdout == CONFIG
    assert sha(copy) == expected
    assert hashlib.sha256(streamed).hexdigest() == expected
    assert sha(disk) == expected
