"""Kernel command line → install config (docs/compat.md#service-kernel-arguments, #service-flow,
#install-config-files precedence)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestos_inst.errors import NestosError, format_chain
from nestos_inst.profile import COREOS, NESTOS
from nestos_inst.service.cmdline import Cmdline, KargError, flag_set, install_device, parse_kargs
from nestos_inst.service.main import (
    build_config,
    choose_profile,
    config_files,
    default_config_dirs,
    run_service,
)


def kargs(text: str) -> dict[str, object]:
    return parse_kargs(Cmdline.parse(text)).layer


# ---- splitting and lookup ---------------------------------------------------------


def test_last_occurrence_wins_and_value_after_first_equals() -> None:
    c = Cmdline.parse("a=1 b a=2=x quiet\n")
    assert c.lookup("a") == "2=x"
    assert c.lookup("quiet") == "quiet"  # a bare flag's value is its own text
    assert c.lookup("missing") is None
    assert c.lookup("b") == "b"


def test_name_must_match_exactly() -> None:
    c = Cmdline.parse("nestos.inst.install_devx=/dev/sdb nestos.inst.install_dev=/dev/sda")
    assert c.lookup("nestos.inst.install_dev") == "/dev/sda"
    assert (
        Cmdline.parse("nestos.inst.install_devx=/dev/sdb").lookup("nestos.inst.install_dev") is None
    )


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("nestos.inst.insecure", True),
        ("nestos.inst.insecure=1", True),
        ("nestos.inst.insecure=yes", True),
        ("nestos.inst.insecure=true", True),
        ("nestos.inst.insecure=Off", True),  # the false words are case-sensitive upstream
        ("nestos.inst.insecure=", False),
        ("nestos.inst.insecure=0", False),
        ("nestos.inst.insecure=no", False),
        ("nestos.inst.insecure=off", False),
        ("", False),
    ],
)
def test_boolean_rules(arg: str, expected: bool) -> None:
    assert flag_set(Cmdline.parse(arg), "insecure") is expected
    assert ("insecure" in kargs(arg)) is expected


def test_boolean_last_occurrence_wins() -> None:
    assert not flag_set(Cmdline.parse("nestos.inst.insecure nestos.inst.insecure=0"), "insecure")
    assert flag_set(Cmdline.parse("nestos.inst.insecure=0 nestos.inst.insecure"), "insecure")


# ---- both prefixes --------------------------------------------------------------


def test_coreos_prefix_is_accepted() -> None:
    kc = parse_kargs(Cmdline.parse("coreos.inst.install_dev=/dev/vda coreos.inst.insecure"))
    assert kc.layer["dest-device"] == "/dev/vda"
    assert kc.layer["insecure"] is True
    assert kc.profiles_seen == [COREOS]


@pytest.mark.parametrize(
    "text",
    [
        "nestos.inst.image_url=http://n/x coreos.inst.image_url=http://c/x",
        "coreos.inst.image_url=http://c/x nestos.inst.image_url=http://n/x",
    ],
)
def test_nestos_prefix_wins_whatever_the_order(text: str) -> None:
    kc = parse_kargs(Cmdline.parse(text))
    assert kc.layer["image-url"] == "http://n/x"
    assert kc.sources["image-url"] == "nestos.inst.image_url=http://n/x"


def test_nestos_false_boolean_beats_coreos_true() -> None:
    assert not flag_set(
        Cmdline.parse("coreos.inst.skip_reboot nestos.inst.skip_reboot=0"), "skip_reboot"
    )


# ---- the translation table ------------------------------------------------------


def test_full_translation() -> None:
    kc = parse_kargs(
        Cmdline.parse(
            "nestos.inst.install_dev=/dev/sda nestos.inst.ignition_url=http://h/c.ign "
            "nestos.inst.image_url=https://h/i.raw.xz nestos.inst.platform_id=qemu "
            "nestos.inst.stream=2403-LTS nestos.inst.save_partlabel=data*,var "
            "nestos.inst.save_partindex=5,7- nestos.inst.insecure nestos.inst.secure_ipl "
            "nestos.inst.skip_reboot"
        )
    )
    assert kc.layer == {
        "dest-device": "/dev/sda",
        "ignition-url": "http://h/c.ign",
        "insecure-ignition": True,
        "image-url": "https://h/i.raw.xz",
        "platform": "qemu",
        "stream": "2403-LTS",
        "save-partlabel": ["data*,var"],
        "save-partindex": ["5,7-"],
        "insecure": True,
        "secure-ipl": True,
        "fetch-retries": "infinite",
    }
    assert kc.skip_reboot and kc.secure_ipl
    assert kc.install_dev == "/dev/sda"
    assert kc.warnings == []


def test_only_fetch_retries_without_installer_kargs() -> None:
    kc = parse_kargs(Cmdline.parse("quiet console=ttyS0"))
    assert kc.layer == {"fetch-retries": "infinite"}
    assert kc.install_dev is None


def test_empty_values_are_ignored() -> None:
    assert kargs(
        "nestos.inst.install_dev= nestos.inst.image_url= nestos.inst.platform_id= "
        "nestos.inst.stream= nestos.inst.save_partlabel= nestos.inst.ignition_url="
    ) == {"fetch-retries": "infinite"}
    assert install_device(Cmdline.parse("nestos.inst.install_dev=")) is None


def test_ignition_url_skip_is_ignored() -> None:
    assert "ignition-url" not in kargs("nestos.inst.ignition_url=skip")


# ---- deprecated forms -----------------------------------------------------------


def test_install_dev_without_slash_is_deprecated() -> None:
    kc = parse_kargs(Cmdline.parse("coreos.inst.install_dev=sda"))
    assert kc.layer["dest-device"] == "/dev/sda"
    assert kc.warnings == [
        'The "coreos.inst.install_dev=sda" syntax is deprecated.',
        'Use "coreos.inst.install_dev=/dev/sda" instead.',
    ]


@pytest.mark.parametrize("prefix", ["nestos.inst", "coreos.inst"])
def test_legacy_inst_yes_warns(prefix: str) -> None:
    kc = parse_kargs(Cmdline.parse(f"{prefix}=yes"))
    assert kc.warnings == [f'"{prefix}=yes" is deprecated and no longer has any effect.']
    assert kc.install_dev is None


def test_stream_base_url_is_not_supported() -> None:
    kc = parse_kargs(Cmdline.parse("coreos.inst.stream_base_url=http://x/"))
    assert kc.warnings == ['"coreos.inst.stream_base_url" is not supported and is ignored.']
    assert "stream-base-url" not in kc.layer


# ---- forwarded kargs ------------------------------------------------------------


def test_network_kargs_become_firstboot_args_with_trailing_space() -> None:
    kc = parse_kargs(
        Cmdline.parse(
            "quiet ip=dhcp ipx=1 nameserver=1.1.1.1 rd.neednet=1 bond=bond0:eth0 "
            "coreos.no_persist_ip nestos.force_persist_ip net.ifnames=0 BOOTIF=01-aa"
        )
    )
    assert kc.layer["firstboot-args"] == (
        "rd.neednet=1 ip=dhcp nameserver=1.1.1.1 bond=bond0:eth0 coreos.no_persist_ip "
        "nestos.force_persist_ip net.ifnames=0 BOOTIF=01-aa "
    )
    assert "append-karg" not in kc.layer


def test_s390x_kargs_persist() -> None:
    layer = kargs("rd.dasd=0.0.0100 quiet cio_ignore=all,!condev rd.zfcp=0.0.1,0x5,0x6 ip=x")
    assert layer["append-karg"] == [
        "rd.dasd=0.0.0100",
        "cio_ignore=all,!condev",
        "rd.zfcp=0.0.1,0x5,0x6",
    ]
    assert layer["firstboot-args"] == "rd.neednet=1 ip=x "


# ---- errors name the karg -------------------------------------------------------


def test_bad_partindex_names_the_karg() -> None:
    with pytest.raises(KargError) as exc:
        parse_kargs(Cmdline.parse("nestos.inst.save_partindex=abc"))
    assert 'invalid kernel argument "nestos.inst.save_partindex=abc"' in str(exc.value)


def test_relative_install_dev_is_an_error() -> None:
    with pytest.raises(KargError, match=r'"coreos\.inst\.install_dev=disk/by-id/x"'):
        parse_kargs(Cmdline.parse("coreos.inst.install_dev=disk/by-id/x"))


def test_bad_url_names_the_karg() -> None:
    kc = parse_kargs(Cmdline.parse("nestos.inst.install_dev=/dev/vda nestos.inst.image_url=foo"))
    with pytest.raises(NestosError) as exc:
        build_config(kc, [])
    text = format_chain(exc.value)
    assert 'parsing kernel argument "nestos.inst.image_url=foo"' in text
    assert "image-url" in text and "invalid URL 'foo'" in text


def test_unreadable_cmdline_file(tmp_path: Path) -> None:
    with pytest.raises(NestosError, match="reading kernel command line"):
        Cmdline.read(tmp_path / "nope")


@given(st.text(max_size=200))
def test_any_cmdline_only_raises_our_errors(text: str) -> None:
    try:
        kc = parse_kargs(Cmdline.parse(text))
    except KargError:
        return
    assert kc.layer["fetch-retries"] == "infinite"


@given(
    st.lists(
        st.sampled_from(
            [
                "nestos.inst.install_dev=/dev/a",
                "coreos.inst.install_dev=b",
                "nestos.inst.insecure=0",
                "coreos.inst.image_url=http://x/",
                "nestos.inst.image_url=zz",
                "ip=dhcp",
                "rd.dasd=1",
                "nestos.inst.save_partindex=1-",
                "coreos.inst=yes",
                "nestos.inst.ignition_url=skip",
                "nestos.inst.platform_id=",
                "coreos.inst.save_partlabel=a,b",
            ]
        ),
        max_size=8,
    )
)
def test_any_karg_mix_builds_a_config_or_names_the_problem(args: list[str]) -> None:
    try:
        build_config(parse_kargs(Cmdline(tuple(args))), [])
    except NestosError as e:
        assert format_chain(e).startswith("Error: ")


# ---- config files + kargs (docs/compat.md#install-config-files precedence) -----------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_files_in_name_order_then_kargs(tmp_path: Path) -> None:
    d = tmp_path / "installer.d"
    write(d / "10-b.yaml", "append-karg: [a, b]\nplatform: aws\nfetch-retries: 1\n")
    write(d / "01-a.yaml", "append-karg: [c, d]\nplatform: gcp\nstream: next\n")
    (d / "subdir").mkdir()
    write(d / ".10-b.yaml.swp", "garbage: [")
    files = config_files([d])
    assert [f.name for f in files] == ["01-a.yaml", "10-b.yaml"]
    kc = parse_kargs(
        Cmdline.parse("nestos.inst.install_dev=/dev/vda nestos.inst.platform_id=qemu rd.dasd=e")
    )
    cfg = build_config(kc, files)
    assert cfg.append_karg == ("c", "d", "a", "b", "rd.dasd=e")
    assert cfg.platform == "qemu"  # kargs override files
    assert cfg.stream == "next"
    assert cfg.fetch_retries == "infinite"
    assert cfg.dest_device == "/dev/vda"


def test_nestos_dir_overrides_coreos_dir(tmp_path: Path) -> None:
    cdir, ndir = tmp_path / "coreos", tmp_path / "nestos"
    write(cdir / "a.yaml", "platform: aws\n")
    write(ndir / "z.yaml", "platform: gcp\n")
    cfg = build_config(parse_kargs(Cmdline.parse("")), config_files([cdir, ndir]))
    assert cfg.platform == "gcp"
    assert [str(d) for d in default_config_dirs()] == [
        COREOS.installer_config_dir,
        NESTOS.installer_config_dir,
    ]


def test_device_in_file_and_karg_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "d" / "a.yaml", "dest-device: /dev/sdb\n")
    kc = parse_kargs(Cmdline.parse("nestos.inst.install_dev=/dev/sda"))
    with pytest.raises(NestosError) as exc:
        build_config(kc, [f])
    assert "cannot be used multiple times" in format_chain(exc.value)


def test_unknown_key_names_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "d" / "a.yaml", "dest-device: /dev/sdb\nbogus: 1\n")
    with pytest.raises(NestosError) as exc:
        build_config(parse_kargs(Cmdline.parse("")), [f])
    text = format_chain(exc.value)
    assert f"parsing config file {f}" in text and "bogus" in text


def test_firstboot_args_not_accepted_in_files(tmp_path: Path) -> None:
    f = write(tmp_path / "d" / "a.yaml", "firstboot-args: x\n")
    with pytest.raises(NestosError, match="parsing config file"):
        build_config(parse_kargs(Cmdline.parse("")), [f])


def test_profile_choice(tmp_path: Path) -> None:
    core = parse_kargs(Cmdline.parse("coreos.inst.install_dev=/dev/vda"))
    both = parse_kargs(Cmdline.parse("coreos.inst.install_dev=/dev/vda nestos.inst.insecure"))
    none = parse_kargs(Cmdline.parse(""))
    assert choose_profile(core, []) is COREOS
    assert choose_profile(both, []) is NESTOS
    assert choose_profile(none, [Path("/etc/coreos/installer.d/a.yaml")]) is COREOS
    assert choose_profile(none, [Path("/etc/nestos/installer.d/a.yaml")]) is NESTOS


# ---- the service entry point (errors before anything is touched) ------------------


def test_no_device_and_no_files(tmp_path: Path) -> None:
    cmdline = write(tmp_path / "cmdline", "quiet nestos.inst=yes\n")
    d = tmp_path / "installer.d"
    d.mkdir()
    with pytest.raises(NestosError, match=r"^No install device specified\.$"):
        run_service(cmdline_file=cmdline, dirs=[d])
    assert d.is_dir()  # nothing removed on failure


def test_config_error_keeps_installer_d(tmp_path: Path) -> None:
    cmdline = write(tmp_path / "cmdline", "nestos.inst.install_dev=/dev/nonexistent-x\n")
    d = tmp_path / "installer.d"
    bad = write(d / "00.yaml", "console: ttyS0\n")  # must be a list
    with pytest.raises(NestosError) as exc:
        run_service(cmdline_file=cmdline, dirs=[d], device_timeout=0)
    assert f"config file {bad}" in format_chain(exc.value)
    assert bad.read_text() == "console: ttyS0\n"
