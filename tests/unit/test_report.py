"""The reporter: one object carries status lines and progress to a stream and sinks."""

from __future__ import annotations

import io

from nestos_inst import report
from nestos_inst.progress import Progress, ProgressEvent
from nestos_inst.report import Reporter


def test_messages_and_progress_go_through_the_reporter_in_effect() -> None:
    out = io.StringIO()
    events: list[ProgressEvent] = []
    rep = Reporter(out)
    rep.add_sink(events.append)
    with report.use(rep):
        report.say("Writing Ignition config")
        report.write("gpg: Good signature\n")
        p = Progress("disk", 2048)
        p.update(2048)
    report.say("after the block")  # not captured: the default reporter is back
    assert out.getvalue() == (
        "Writing Ignition config\ngpg: Good signature\nRead disk 2.0 KiB/2.0 KiB (100%)\n"
    )
    assert [(e.kind, e.done, e.final) for e in events] == [("disk", 2048, True)]


def test_library_messages_use_the_reporter() -> None:
    """A low-level module (install's console hint) says what it has to say through the
    reporter, so a front end can capture it without touching stderr."""
    from nestos_inst.install.console import console_hint

    out = io.StringIO()
    with report.use(Reporter(out)):
        assert console_hint(["console=ttyS0"])
    assert out.getvalue().startswith("\nNote: consider using")
