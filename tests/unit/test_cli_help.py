"""The command line people expect: -h/--help, usage errors, hidden commands, defaults."""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from nestos_inst.cli import Entry, build_registry
from nestos_inst.cli.help import LongHelp, ShortHelp, long_text, print_long_help
from tests.helpers.cli import run_cli

HIDDEN_TOP = ("pack", "dev", "service")


def test_short_and_long_help() -> None:
    short = run_cli("install", "-h")
    long = run_cli("install", "--help")
    assert short.returncode == long.returncode == 0
    s, lng = short.stdout.decode(), long.stdout.decode()
    # -h: one line per option; --help: the option alone, its paragraph indented below.
    assert re.search(r"^  -s NAME, --stream NAME +Stream to install", s, re.M)
    assert re.search(r"^  -s, --stream NAME\n {10}\S", lng, re.M)
    assert "\n\n  -u, --image-url URL\n" in lng
    assert "Print help (see more with '--help')" in s
    for text in (s, lng):
        assert max(len(line) for line in text.splitlines()) <= 80


def test_long_help_shows_defaults_the_same_way() -> None:
    text = run_cli("download", "--help").stdout.decode()
    assert "[default: metal]" in text
    assert "(default:" not in text


def test_unknown_option_shows_the_command_usage() -> None:
    proc = run_cli("install", "--bogus")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.startswith("usage: nestos-installer install ")
    assert err.endswith("error: unrecognized arguments: --bogus\n")
    proc = run_cli("iso", "kargs", "show", "--bogus", "x.iso")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.startswith("usage: nestos-installer iso kargs show ")


def test_hidden_commands_stay_out_of_invalid_choice_lists() -> None:
    proc = run_cli("bogus")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "invalid choice: 'bogus' (choose from 'install', 'download'" in err
    for name in HIDDEN_TOP:
        assert f"'{name}'" not in err
        assert run_cli(name, "--help").returncode in (0, 2)  # still reachable
    assert "pack" not in run_cli("--help").stdout.decode()


def test_hidden_command_still_parses() -> None:
    proc = run_cli("pack", "example-config")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("# ")


@pytest.mark.parametrize("entry", [e for e in build_registry().entries if not e.hidden],
                         ids=lambda e: e.path)  # fmt: skip
def test_metavars_and_defaults_are_consistent(entry: object) -> None:
    from nestos_inst.cli import Entry

    assert isinstance(entry, Entry)
    text = entry.parser.format_help()
    usage = text.split("\n\n")[0]
    # Values are written in capitals everywhere (NAME, PATH, URL, ...).
    for word in re.findall(r"(?:-\w|--[\w-]+) ([A-Za-z_]+)", usage):
        assert word.isupper(), f"{entry.path}: metavar {word!r}"
    assert "(default:" not in text
    assert "show program's" not in text


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"nestos-installer \d+\.\d+\.\d+\n", proc.stdout.decode())


def _options(entry: object) -> list[argparse.Action]:
    from nestos_inst.cli import Entry
    from nestos_inst.cli.man import help_sections

    assert isinstance(entry, Entry)
    return [
        a
        for section in help_sections(entry.parser)
        for a in section.actions
        if not isinstance(a, (ShortHelp, LongHelp))
    ]


@pytest.mark.parametrize("entry", [e for e in build_registry().entries if not e.group],
                         ids=lambda e: e.path)  # fmt: skip
def test_every_option_has_a_paragraph(entry: object) -> None:
    """--help (and the man pages) explain every option, hidden commands' included, in
    more words than the one-line summary."""
    for action in _options(entry):
        short = action.help if isinstance(action.help, str) else ""
        text = long_text(action)
        assert text != short and len(text) > len(short), (action.option_strings, action.dest)
    assert isinstance(entry, Entry)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_long_help(entry.parser)
    assert max(len(line) for line in out.getvalue().splitlines()) <= 80


def test_aliases_are_accepted_but_not_shown() -> None:
    """`--ignition` (upstream's hidden alias of --ignition-file) parses like it and
    conflicts like it, but no help, man page or reference names it."""
    from nestos_inst.cli import build_parser
    from nestos_inst.cli.man import render_markdown

    args = build_parser().parse_args(["install", "--ignition", "c.ign", "/dev/vda"])
    assert args.ignition_file == "c.ign"
    proc = run_cli("install", "--ignition", "c.ign", "-I", "https://example.com/c.ign", "x")
    assert proc.returncode == 2
    assert "not allowed with argument --ignition" in proc.stderr.decode()
    for flag in ("-h", "--help"):
        text = run_cli("install", flag).stdout.decode()
        assert "--ignition-file" in text
        assert not re.search(r"--ignition\b(?!-)", text), flag
    section = render_markdown(build_registry()).split("## `nestos-installer install`")[1]
    assert not re.search(r"--ignition\b(?!-)", section.split("\n## ", 1)[0])
