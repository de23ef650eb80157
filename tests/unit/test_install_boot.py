"""/boot post-processing (docs/compat.md#boot-edits) on a plain directory laid out like the boot
fs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestos_inst.errors import NestosError, format_chain
from nestos_inst.install import bls
from nestos_inst.install.console import parse_console
from nestos_inst.install.postinstall import BootEdits, apply, load_platforms
from nestos_inst.profile import COREOS, NESTOS
from tests.helpers.metalimage import BLS_OPTIONS, FIRSTBOOT, GRUB_CFG, PLATFORMS


def make_boot(root: Path, *, brand: str = "nestos", entries: int = 2) -> Path:
    boot = root / "boot"
    (boot / "loader" / "entries").mkdir(parents=True)
    for i in range(1, entries + 1):
        (boot / "loader" / "entries" / f"ostree-{i}.conf").write_text(
            f"title T{i}  \nversion {i}\noptions {BLS_OPTIONS}\nlinux /vmlinuz\n"
        )
    (boot / "ignition.firstboot").write_text(FIRSTBOOT)
    (boot / "grub2").mkdir()
    (boot / "grub2" / "grub.cfg").write_text(GRUB_CFG)
    (boot / brand).mkdir()
    (boot / brand / "platforms.json").write_text(json.dumps(PLATFORMS))
    return boot


def edits(**kw: object) -> BootEdits:
    base: dict[str, object] = {
        "ignition": None,
        "ignition_hash": None,
        "platform": None,
        "consoles": (),
        "firstboot_args": None,
        "append_karg": (),
        "delete_karg": (),
        "network_dir": None,
    }
    base.update(kw)
    return BootEdits.build(**base)  # type: ignore[arg-type]


def options(boot: Path, name: str = "ostree-2.conf") -> str:
    for line in (boot / "loader" / "entries" / name).read_text().splitlines():
        if line.startswith("options "):
            return line[len("options ") :]
    raise AssertionError("no options line")


def grub_block(boot: Path) -> list[str]:
    text = (boot / "grub2" / "grub.cfg").read_text()
    start = text.index(bls.GRUB_START + "\n") + len(bls.GRUB_START) + 1
    return text[start : text.index(bls.GRUB_END)].splitlines()


# ---- grub.cfg block (docs/compat.md#reference-results test_update_grub_cfg) ----------------------


@pytest.mark.parametrize("existing", [[], ["old"], ["old1", "old 2"]])
@pytest.mark.parametrize("new", [[], ["first"], ["first", "sec ond", "third"]])
def test_update_grub_block(existing: list[str], new: list[str]) -> None:
    body = "".join(c + "\n" for c in existing)
    text = f"a\nb\n# CONSOLE-SETTINGS-START\n{body}# CONSOLE-SETTINGS-END\nc\n"
    out = bls.update_grub_block(text, new)
    expect_body = "".join(c + "\n" for c in new)
    assert out == f"a\nb\n# CONSOLE-SETTINGS-START\n{expect_body}# CONSOLE-SETTINGS-END\nc\n"


@pytest.mark.parametrize(
    "text",
    [
        "a\nb\nc\n",
        "# CONSOLE-SETTINGS-START\nx\n# CONSOLE-SETTINGS-END\n",  # START not after a newline
        "a\n# CONSOLE-SETTINGS-START\nx\n",
    ],
)
def test_grub_block_missing_markers(text: str) -> None:
    with pytest.raises(NestosError, match=r"missing substitution marker in grub\.cfg"):
        bls.update_grub_block(text, ["x"])


# ---- BLS entry --------------------------------------------------------------------------


def test_last_entry_only_and_trimmed(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    before1 = (boot / "loader/entries/ostree-1.conf").read_bytes()
    assert bls.edit_kargs(boot, append=["quiet"]) == (BLS_OPTIONS, BLS_OPTIONS + " quiet")
    assert (boot / "loader/entries/ostree-1.conf").read_bytes() == before1
    text = (boot / "loader/entries/ostree-2.conf").read_text()
    assert text.startswith("title T2\n")  # right-trimmed
    assert text.endswith("\n")


def test_nothing_requested_touches_nothing(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    entry = boot / "loader/entries/ostree-2.conf"
    before = entry.stat().st_mtime_ns, entry.read_bytes()
    assert bls.edit_kargs(boot) is None
    assert (entry.stat().st_mtime_ns, entry.read_bytes()) == before


def test_bls_errors(tmp_path: Path) -> None:
    boot = make_boot(tmp_path, entries=0)
    with pytest.raises(NestosError, match="Found no BLS entries in"):
        bls.edit_kargs(boot, append=["x"])
    entry = boot / "loader/entries/a.conf"
    entry.write_text("title x\n")
    with pytest.raises(NestosError, match="Couldn't locate 'options' line"):
        bls.edit_kargs(boot, append=["x"])
    entry.write_text("options a\noptions b\n")
    with pytest.raises(NestosError, match="Multiple 'options' lines found"):
        bls.edit_kargs(boot, append=["x"])
    assert entry.read_text() == "options a\noptions b\n"


# ---- the whole sequence -----------------------------------------------------------------


def test_ignition_modes_and_create_new(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    apply(boot, edits(ignition=b'{"ignition":{}}'), NESTOS)
    d, f = boot / "ignition", boot / "ignition" / "config.ign"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.read_bytes() == b'{"ignition":{}}'
    with pytest.raises(NestosError) as exc:
        apply(boot, edits(ignition=b"{}"), NESTOS)
    assert "File exists (os error 17)" in format_chain(exc.value)
    assert f.read_bytes() == b'{"ignition":{}}'


def test_platform_applies_platforms_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = make_boot(tmp_path)
    apply(boot, edits(platform="qemu"), NESTOS)
    opts = options(boot)
    assert "ignition.platform.id=qemu" in opts
    assert "ignition.platform.id=metal" not in opts
    assert opts.endswith("console=tty0 console=ttyS0,115200n8")
    assert grub_block(boot) == PLATFORMS["qemu"]["grub_commands"]
    assert "Setting platform to qemu" in capsys.readouterr().err


def test_platform_without_grub_commands_keeps_grub(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    apply(boot, edits(platform="aws"), NESTOS)
    assert options(boot).endswith("console=ttyS0,115200n8")
    assert (boot / "grub2" / "grub.cfg").read_text() == GRUB_CFG


def test_platform_id_missing(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    entry = boot / "loader/entries/ostree-2.conf"
    entry.write_text("options root=x\n")
    with pytest.raises(NestosError, match="couldn't locate platform ID"):
        apply(boot, edits(platform="qemu"), NESTOS)


def test_console_overrides_platform_kargs(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    consoles = [parse_console("ttyS1,115200"), parse_console("tty0")]
    apply(boot, edits(platform="qemu", consoles=consoles), NESTOS)
    opts = options(boot)
    assert "ignition.platform.id=qemu" in opts
    assert opts.endswith("console=ttyS1,115200n8 console=tty0")
    assert grub_block(boot) == [
        "serial --unit=1 --speed=115200 --word=8 --parity=no",
        "terminal_input console serial",
        "terminal_output console serial",
    ]


def test_console_cfg_preferred(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    (boot / "grub2" / "console.cfg").write_text(
        "x\n# CONSOLE-SETTINGS-START\n# CONSOLE-SETTINGS-END\n"
    )
    apply(boot, edits(consoles=[parse_console("tty0")]), NESTOS)
    assert (boot / "grub2" / "grub.cfg").read_text() == GRUB_CFG
    assert "terminal_output console" in (boot / "grub2" / "console.cfg").read_text()


def test_kargs_firstboot_and_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boot = make_boot(tmp_path)
    apply(
        boot,
        edits(
            firstboot_args="ip=dhcp",
            append_karg=["console=ttyS0,115200n8", "nosmt"],
            delete_karg=["mitigations=auto,nosmt"],
        ),
        NESTOS,
    )
    opts = options(boot)
    assert "mitigations" not in opts
    assert opts.endswith("console=ttyS0,115200n8 nosmt")
    assert (boot / "ignition.firstboot").read_text() == (
        FIRSTBOOT + 'set ignition_network_kcmdline="ip=dhcp"\n'
    )
    err = capsys.readouterr().err
    assert err.index("Writing first-boot kernel arguments") < err.index("Modifying kernel")
    assert 'Note: consider using "--console ttyS0,115200n8" instead of' in err


def test_firstboot_file_must_exist(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    (boot / "ignition.firstboot").unlink()
    with pytest.raises(NestosError) as exc:
        apply(boot, edits(firstboot_args="x"), NESTOS)
    assert "No such file or directory" in format_chain(exc.value)
    assert not (boot / "ignition.firstboot").exists()


def test_copy_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boot = make_boot(tmp_path)
    src = tmp_path / "nm"
    (src / "sub").mkdir(parents=True)
    (src / "a.nmconnection").write_text("[connection]\nid=a\n")
    (src / "real").write_text("linked\n")
    os.symlink(src / "real", src / "b.nmconnection")
    apply(boot, edits(network_dir=str(src)), NESTOS)
    dest = boot / "nestos-firstboot-network"
    assert sorted(p.name for p in dest.iterdir()) == ["a.nmconnection", "b.nmconnection", "real"]
    assert (dest / "b.nmconnection").read_text() == "linked\n"
    assert not (dest / "b.nmconnection").is_symlink()
    assert stat.S_IMODE((dest / "a.nmconnection").stat().st_mode) == 0o600
    err = capsys.readouterr().err
    assert f"Copying networking configuration from {src}" in err
    assert f"Copying {src / 'a.nmconnection'} to installed system" in err


def test_coreos_profile_dirs_and_fallback(tmp_path: Path) -> None:
    boot = make_boot(tmp_path, brand="coreos")
    assert load_platforms(boot, NESTOS) == load_platforms(boot, COREOS)
    assert load_platforms(boot, NESTOS)["qemu"]["kernel_arguments"]
    src = tmp_path / "nm"
    src.mkdir()
    (src / "x").write_text("x")
    apply(boot, edits(network_dir=str(src)), NESTOS)  # the image's brand decides
    assert (boot / "coreos-firstboot-network" / "x").exists()
    assert not (boot / "nestos-firstboot-network").exists()


def test_platforms_json_absent_or_bad(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    (boot / "nestos" / "platforms.json").unlink()
    assert load_platforms(boot, NESTOS) == {}
    (boot / "nestos" / "platforms.json").write_text('{"qemu": {"kernel_arguments": "x"}}')
    with pytest.raises(NestosError, match=r"parsing .*platforms\.json"):
        load_platforms(boot, NESTOS)


def test_describe_and_needed() -> None:
    e = edits()
    assert not e.needed()
    assert e.describe() == []
    e = edits(ignition=b"{}", platform="qemu", append_karg=["a"], network_dir="/x")
    assert e.needed()
    text = "\n".join(e.describe())
    assert "Ignition" in text
    assert "qemu" in text
    assert "/x" in text


_PIECES = st.sampled_from(["a", "\n", "# CONSOLE-SETTINGS-START", "# CONSOLE-SETTINGS-END", " "])


@given(
    st.lists(_PIECES, max_size=12).map("".join),
    st.lists(st.text(alphabet="xyz ", max_size=5), max_size=3),
)
def test_fuzz_grub_block(text: str, commands: list[str]) -> None:
    try:
        out = bls.update_grub_block(text, commands)
    except NestosError:
        return
    body = "".join(c + "\n" for c in commands)
    assert "\n" + bls.GRUB_START + "\n" + body + bls.GRUB_END in out


def test_symlinked_dirs_refused(tmp_path: Path) -> None:
    boot = make_boot(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (boot / "ignition").symlink_to(outside)
    with pytest.raises(NestosError, match="refusing to write through symbolic link"):
        apply(boot, edits(ignition=b"{}"), NESTOS)
    (boot / "nestos-firstboot-network").symlink_to(outside)
    src = tmp_path / "nm"
    src.mkdir()
    (src / "x").write_text("x")
    with pytest.raises(NestosError, match="refusing to write through symbolic link"):
        apply(boot, edits(network_dir=str(src)), NESTOS)
    assert list(outside.iterdir()) == []
