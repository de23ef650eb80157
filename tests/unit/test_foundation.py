"""Error chains, size formatting, progress lines, and the command tree's help."""

from __future__ import annotations

import argparse
import errno
import io

import pytest

from nestos_inst.cli import build_parser
from nestos_inst.errors import NestosError, context, format_chain
from nestos_inst.progress import Progress, ProgressEvent, add_sink, format_size, remove_sink
from nestos_inst.run import run
from tests.helpers.cli import run_cli


def test_chain_single_and_numbered() -> None:
    try:
        with context("opening /x"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    except NestosError as exc:
        assert format_chain(exc) == (
            "Error: opening /x\n\nCaused by:\n    No such file or directory (os error 2)"
        )
    try:
        with context("top"), context("middle"):
            raise NestosError("bottom")
    except NestosError as exc:
        assert format_chain(exc) == ("Error: top\n\nCaused by:\n    0: middle\n    1: bottom")
    assert format_chain(NestosError("alone")) == "Error: alone"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (10035, "9.8 KiB"),
        (512 * 1024 * 1024, "512.0 MiB"),
        (2040109465, "1.9 GiB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_progress_plain_lines_and_sink() -> None:
    now = [0.0]
    out = io.StringIO()
    events: list[ProgressEvent] = []
    add_sink(events.append)
    try:
        p = Progress("disk", 4096, stream=out, clock=lambda: now[0])
        p.update(1024)  # < 1 s: nothing
        now[0] = 1.5
        p.update(2048)
        p.update(4096)
        p.finish()
    finally:
        remove_sink(events.append)
    assert out.getvalue() == "Read disk 2.0 KiB/4.0 KiB (50%)\nRead disk 4.0 KiB/4.0 KiB (100%)\n"
    assert [e.percent for e in events] == [50, 100]
    assert events[-1].final


def test_progress_unknown_length() -> None:
    out = io.StringIO()
    p = Progress("kernel", None, stream=out)
    p.update(100)
    p.finish()
    assert out.getvalue() == "Read kernel 100 B\n"


def test_run_reports_stderr() -> None:
    with pytest.raises(NestosError) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    assert "exit status 3" in format_chain(info.value)
    assert "boom" in format_chain(info.value)


def _walk(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _walk(sub)
    return found


def test_every_help_fits_80_columns() -> None:
    for parser in _walk(build_parser()):
        for line in parser.format_help().splitlines():
            assert len(line) <= 80, f"{parser.prog}: {line!r}"


def test_version_and_usage_exit_codes() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"nestos-installer ")
    assert run_cli("--no-such-flag").returncode == 2
    assert run_cli("no-such-command").returncode == 2
