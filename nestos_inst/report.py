"""The one way library code tells the user something: status lines and progress.

Results go to stdout from the command line; everything else (status lines, warnings,
gpg's status text, progress) goes through the current Reporter. It writes to stderr
(looked up when writing, so redirections and test captures apply) and hands progress
events to its sinks: service mode adds one that writes structured journal records.
Low-level modules call say()/write() instead of touching stderr, so a front end can
redirect or capture all of it in one place (use()).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
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


class Reporter:
    """Messages to a text stream (stderr by default), progress events to sinks."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def say(self, text: str) -> None:
        """One status line."""
        self.write(text + "\n")

    def write(self, text: str) -> None:
        """Text as is (may span lines or be empty), flushed at once."""
        out = self.stream
        if text:
            out.write(text)
        out.flush()

    def add_sink(self, sink: Sink) -> None:
        """Also send every progress event to `sink` (e.g. the journal)."""
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def event(self, ev: ProgressEvent) -> None:
        """A progress event for the sinks (the terminal text is Progress's job)."""
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            sink(ev)


# The reporter in effect is the last one; use() pushes and pops.
_stack: list[Reporter] = [Reporter()]


def reporter() -> Reporter:
    """The reporter in effect."""
    return _stack[-1]


@contextlib.contextmanager
def use(rep: Reporter) -> Iterator[Reporter]:
    """Route messages and progress through `rep` for the duration of the block."""
    _stack.append(rep)
    try:
        yield rep
    finally:
        _stack.remove(rep)


def say(text: str) -> None:
    """One status line to the user."""
    reporter().say(text)


def write(text: str) -> None:
    """Text to the user as is (multi-line status text, blank lines)."""
    reporter().write(text)
