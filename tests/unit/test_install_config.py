"""The options table, InstallConfig validation and the docs/compat.md#install-config-files merge
semantics."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import NestosError, format_chain
from nestos_inst.install.config import (
    ArgumentLayer,
    InstallConfig,
    load_config_file,
    merge_layers,
    validate_layer,
)
from nestos_inst.install.options import CONFIG_KEYS, OPTIONS, default_architecture, example_config

E3B0 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

FULL: dict[str, Any] = {
    "stream": "c",
    "image-url": "http://example.com/d",
    "image-file": "e",
    "ignition-file": "f",
    "ignition-url": "http://example.com/g",
    "ignition-hash": f"sha256-{E3B0}",
    "architecture": "h",
    "platform": "i",
    "console": ["ttyS0", "ttyS1,115200n8"],
    "append-karg": ["k", "l"],
    "delete-karg": ["m", "n"],
    "copy-network": True,
    "network-dir": "o",
    "save-partlabel": ["p", "q"],
    "save-partindex": ["r", "s"],
    "offline": True,
    "insecure": True,
    "insecure-ignition": True,
    "stream-base-url": "http://example.com/t",
    "preserve-on-error": True,
    "fetch-retries": 3,
    "secure-ipl": True,
    "dest-device": "u",
}

REFERENCE = (
    "--stream c --image-url http://example.com/d --image-file e --ignition-file f "
    "--ignition-url http://example.com/g --ignition-hash sha256-" + E3B0 + " "
    "--architecture h --platform i --console ttyS0,9600n8 --console ttyS1,115200n8 "
    "--append-karg k --append-karg l --delete-karg m --delete-karg n --copy-network "
    "--network-dir o --save-partlabel p --save-partlabel q --save-partindex r "
    "--save-partindex s --offline --insecure --insecure-ignition "
    "--stream-base-url http://example.com/t --preserve-on-error --fetch-retries 3 "
    "--secure-ipl u"
)


def test_config_keys_are_upstreams_in_struct_order() -> None:
    upstream = [
        "stream", "image-url", "image-file", "ignition-file", "ignition-url",
        "ignition-hash", "architecture", "platform", "console", "append-karg",
        "delete-karg", "copy-network", "network-dir", "save-partlabel", "save-partindex",
        "offline", "insecure", "insecure-ignition", "stream-base-url", "preserve-on-error",
        "fetch-retries", "secure-ipl",
    ]  # fmt: skip
    ours = [k for k in CONFIG_KEYS if k in upstream]
    assert ours == upstream
    assert "firstboot-args" not in CONFIG_KEYS
    assert "config-file" not in CONFIG_KEYS
    assert "dest-device" in CONFIG_KEYS


def test_every_model_field_is_an_option_in_order() -> None:
    assert [o.field for o in OPTIONS] == [f.name for f in dataclasses.fields(InstallConfig)]


def test_full_serialization_matches_reference() -> None:
    cfg = validate_layer(FULL, "a test")
    assert " ".join(cfg.to_args()) == REFERENCE


def test_default_serializes_to_nothing() -> None:
    cfg = InstallConfig()
    assert cfg.to_args() == []
    assert cfg.to_yaml_dict() == {}
    assert yaml.safe_dump(cfg.to_yaml_dict()).strip() == "{}"


def test_frozen() -> None:
    cfg = InstallConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stream = "x"  # type: ignore[misc]


def test_lists_accumulate_scalars_last_wins() -> None:
    cfg = merge_layers(
        [
            {"append-karg": ["c", "d"], "fetch-retries": 2},
            {"append-karg": ["a", "b"], "fetch-retries": 1},
            {"append_karg": ["e", "f"], "fetch_retries": 3},
        ]
    )
    assert cfg.append_karg == ("c", "d", "a", "b", "e", "f")
    assert cfg.fetch_retries == 3


def test_cli_value_equal_to_default_does_not_override() -> None:
    arch = default_architecture()
    cfg = merge_layers(
        [{"architecture": "s390x", "fetch-retries": 2}, {"architecture": arch, "fetch_retries": 0}]
    )
    assert cfg.architecture == "s390x"
    assert cfg.fetch_retries == 2


def test_flags_only_turn_on() -> None:
    cfg = merge_layers([{"insecure": True}, {"insecure": False}])
    assert cfg.insecure is True


def test_two_destination_devices() -> None:
    with pytest.raises(NestosError) as exc:
        merge_layers([{"dest-device": "/dev/a"}, {"dest-device": "/dev/b"}], ["file a", "cli"])
    text = format_chain(exc.value)
    assert "reprocessing command-line arguments" in text
    assert "DEST_DEVICE" in text


def test_conflicts_across_layers() -> None:
    with pytest.raises(NestosError) as exc:
        merge_layers([{"image-url": "https://x/y"}, {"image-file": "/z"}])
    assert "cannot be used with" in format_chain(exc.value)


def test_consoles_normalized_urls_checked() -> None:
    cfg = merge_layers([{"console": ["ttyS0", "tty0"]}, {"image-url": "https://example.com"}])
    assert tuple(map(str, cfg.console)) == ("ttyS0,9600n8", "tty0")
    assert cfg.image_url == "https://example.com/"
    with pytest.raises(NestosError) as exc:
        merge_layers([{"image-url": "not a url"}], ["config file x.yaml"])
    assert "parsing config file x.yaml" in format_chain(exc.value)


def test_yaml_scalars_accepted_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stream: 3\nappend-karg: [1, b]\nfetch-retries: infinite\n")
    cfg = merge_layers([load_config_file(path)])
    assert cfg.stream == "3"
    assert cfg.append_karg == ("1", "b")
    assert cfg.fetch_retries == "infinite"


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("foo: bar\n", "unknown field `foo`"),
        ("firstboot-args: x\n", "unknown field `firstboot-args`"),
        ("config-file: x\n", "unknown field `config-file`"),
        ("image_url: https://x/\n", "unknown field `image_url`"),
        ("console: ttyS0\n", "invalid value for `console`: expected a list of strings"),
        ("console: [bogus]\n", "invalid or unsupported console argument"),
        ("insecure: yes-please\n", "invalid value for `insecure`"),
        ("ignition-hash: sha512-00\n", "wrong digest length (8)"),
        ("fetch-retries: -1\n", "invalid value for `fetch-retries`"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "while parsing"),
    ],
)
def test_config_file_errors_name_file_and_key(tmp_path: Path, text: str, cause: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NestosError) as exc:
        load_config_file(path)
    chain = format_chain(exc.value)
    assert chain.startswith(f"Error: parsing config file {path}")
    assert cause in chain


def test_empty_config_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config_file(path) == {}


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(NestosError) as exc:
        load_config_file(tmp_path / "nope.yaml")
    assert "No such file or directory (os error 2)" in format_chain(exc.value)


def test_example_config_parses_and_covers_every_key(tmp_path: Path) -> None:
    text = example_config()
    assert load_config_file(_write(tmp_path / "as-is.yaml", text)) == {}
    uncommented = "\n".join(
        line[2:] for line in text.splitlines() if re.match(r"# [a-z-]+:|#   - ", line)
    )
    data = load_config_file(_write(tmp_path / "example.yaml", uncommented))
    assert set(data) == set(CONFIG_KEYS)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


_values = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.text(max_size=5), st.integers(), st.booleans()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*CONFIG_KEYS, "junk"]), _values, max_size=6))
def test_fuzz_layers_only_raise_our_errors(layer: dict[str, Any]) -> None:
    try:
        cfg = merge_layers([layer])
    except NestosError:
        return
    # Whatever validated must serialize and re-validate to the same config.
    assert merge_layers([cfg.to_yaml_dict()]) == cfg


def _outcome(layer: dict[str, Any]) -> InstallConfig | str:
    try:
        return merge_layers([layer], ["the command line"])
    except NestosError as exc:
        return format_chain(exc)


_cli_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["ttyS0,115200n8", "3", "infinite", "http://e.com", "sha256-" + E3B0, "a=b"]),
)
# What argparse hands over per kind: store_true flags, appended lists, stored text.
_CLI_VALUE = {
    "flag": st.booleans(),
    "list": st.lists(st.one_of(_cli_text, st.sampled_from(["tty0", "x=y", "5-"])), max_size=3),
    "single": _cli_text,
    "positional": _cli_text,
}
_KIND = {o.field: o.kind for o in OPTIONS}
_KEY = {o.field: o.key for o in OPTIONS}


def _argument_layer(names: list[str], yaml_keys: list[bool]) -> Any:
    """Values by kind, each keyed by its field name or its YAML key (kernel arguments)."""
    return st.fixed_dictionaries(
        {(_KEY[n] if k else n): _CLI_VALUE[_KIND[n]] for n, k in zip(names, yaml_keys, strict=True)}
    )


_cli_layers = st.lists(st.sampled_from(list(_KIND)), max_size=5, unique=True).flatmap(
    lambda names: st.lists(st.booleans(), min_size=len(names), max_size=len(names)).flatmap(
        lambda keys: _argument_layer(names, keys)
    )
)


@settings(max_examples=300, deadline=None)
@given(_cli_layers)
def test_command_line_layer_checks_like_the_pydantic_model(layer: dict[str, Any]) -> None:
    """Argument layers skip pydantic (ArgumentLayer); what argparse or the kernel
    command line can hand over (text, flags, lists of text, by field name or YAML key)
    gives the same config or the same message as the pydantic model."""
    assert _outcome(ArgumentLayer(layer)) == _outcome(dict(layer))


def test_install_from_arguments_needs_no_pydantic() -> None:
    """The installer's and the kernel's command lines are checked without pydantic."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nestos_inst.install.config import ArgumentLayer, merge_layers\n"
        "cfg = merge_layers([ArgumentLayer(image_url='http://e.com', append_karg=['a=b'],"
        " platform='qemu', dest_device='/dev/vda')])\n"
        "assert cfg.image_url == 'http://e.com/' and cfg.append_karg == ('a=b',)\n"
        "from nestos_inst.service.cmdline import Cmdline, parse_kargs\n"
        "from nestos_inst.service.main import build_config\n"
        "kargs = parse_kargs(Cmdline.parse('nestos.inst.install_dev=/dev/vda "
        "nestos.inst.image_url=http://e.com/x.raw.xz nestos.inst.insecure'))\n"
        "cfg = build_config(kargs, [])\n"
        "assert cfg.dest_device == '/dev/vda' and cfg.insecure, cfg\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_config_file_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(data)
    try:
        load_config_file(path)
    except NestosError:
        pass


def test_docs_list_every_config_key() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "config-file.md").read_text()
    for key in CONFIG_KEYS:
        assert f"| `{key}` |" in doc


def test_shipped_example_config_is_generated_from_the_table() -> None:
    """data/example-config.yaml (installed by `make install`) is `pack example-config`'s
    output; regenerate it with `python -m nestos_inst pack example-config`."""
    shipped = Path(__file__).resolve().parents[2] / "data" / "example-config.yaml"
    assert shipped.read_text() == example_config()


def test_docs_key_table_is_generated_from_the_table() -> None:
    """docs/config-file.md's key table is options_table()'s output (regenerate it from
    `python -c "from nestos_inst.install.options import options_table; print(options_table())"`)."""
    from nestos_inst.install.options import options_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "config-file.md").read_text()
    begin = "<!-- generated from nestos_inst/install/options.py: options_table() -->\n"
    end = "<!-- end of generated table -->"
    assert doc[doc.index(begin) + len(begin) : doc.index(end)] == options_table()


def test_fetch_timeout_and_retries_parse_once_for_every_layer() -> None:
    """The same parsers as the command line: YAML numbers become seconds and counts;
    out-of-range values are errors naming the key (one parser per value type)."""
    cfg = merge_layers([{"fetch-timeout": 5, "fetch-retries": 3}])
    assert (cfg.fetch_timeout, cfg.retries) == (5.0, 3)
    for layer, key in (
        ({"fetch-timeout": 0}, "fetch-timeout"),
        ({"fetch-retries": 99999999999}, "fetch-retries"),
    ):
        with pytest.raises(NestosError) as exc:
            merge_layers([layer])
        assert f"invalid value for `{key}`" in format_chain(exc.value)
