"""Progress reporting for long reads (docs/compat.md#progress) plus pluggable sinks.

The text goes to stderr only (stdout carries results). Extra sinks receive a
ProgressEvent; service mode registers one that writes structured journal fields.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_size(n: int) -> str:
    """Binary units with one decimal; plain bytes below 1 KiB (`512 B`)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = "B"
    for u in _UNITS:
        if value < 1024:
            break
        value /= 1024
        unit = u
    return f"{value:.1f} {unit}"


@dataclass(frozen=True)
class ProgressEvent:
    """One report: what is being read, how far, out of how much (if known)."""

    stage: str
    kind: str
    done: int
    total: int | None
    final: bool

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, self.done * 100 // self.total)

    def text(self) -> str:
        pct = self.percent
        if self.total and pct is not None:
            return f"Read {self.kind} {format_size(self.done)}/{format_size(self.total)} ({pct}%)"
        return f"Read {self.kind} {format_size(self.done)}"


Sink = Callable[[ProgressEvent], None]
_sinks: list[Sink] = []
_sinks_lock = threading.Lock()


def add_sink(sink: Sink) -> None:
    """Also send every report to `sink` (e.g. the journal in service mode)."""
    with _sinks_lock:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    with _sinks_lock:
        if sink in _sinks:
            _sinks.remove(sink)


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
        self.stream = stream if stream is not None else sys.stderr
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
        with _sinks_lock:
            sinks = list(_sinks)
        for sink in sinks:
            sink(ev)
