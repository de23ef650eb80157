"""Progress reporting for long reads (docs/compat.md#progress) plus pluggable sinks.

The text goes to the reporter's stream (stderr; stdout carries results) and each
ProgressEvent to the reporter's sinks: service mode registers one that writes
structured journal fields (nestos_inst.report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from .report import ProgressEvent, format_size, reporter

__all__ = ["Progress", "ProgressEvent", "add_sink", "format_size", "remove_sink"]


def add_sink(sink: Callable[[ProgressEvent], None]) -> None:
    """Also send every report to `sink` (e.g. the journal in service mode)."""
    reporter().add_sink(sink)


def remove_sink(sink: Callable[[ProgressEvent], None]) -> None:
    reporter().remove_sink(sink)


class Progress:
    """Rate-limited (1 Hz) reporter; a live bar on a TTY, plain lines otherwise."""

    def __init__(
        self,
        kind: str,
        total: int | None,
        *,
        stage: str = "write",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self.kind = kind
        self.total = total if total else None
        self.stage = stage
        self.stream = stream if stream is not None else reporter().stream
        self.clock = clock
        self.interval = interval
        self.pos = 0
        self._last = clock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._done = False

    def add(self, n: int) -> None:
        self.update(self.pos + n)

    def update(self, pos: int) -> None:
        self.pos = pos
        if self.total is not None and pos >= self.total:
            self._emit(final=True)
            return
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(final=False)

    def finish(self) -> None:
        if not self._done:
            self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        if self._done:
            return
        ev = ProgressEvent(self.stage, self.kind, self.pos, self.total, final)
        if final:
            self._done = True
        if self._tty:
            self.stream.write(f"> {ev.text()}   \r")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(ev.text() + "\n")
        self.stream.flush()
        reporter().event(ev)
