"""Progress and status as structured journal records plus sd_notify STATUS=.

Operators run `journalctl -u nestos-installer -o json` and get machine-readable fields
(NESTOS_INSTALLER_STAGE, _BYTES_DONE, _BYTES_TOTAL, _PERCENT, _DEVICE, _IMAGE) next to
the human MESSAGE; `systemctl status` shows the stage and percentage through STATUS=.
systemd-python is used when present (the distribution ships it); otherwise the same
native-protocol datagrams are written directly, so an initramfs without the binding
still logs structured fields.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from ..progress import ProgressEvent, add_sink, remove_sink

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "nestos-installer"
FIELD_PREFIX = "NESTOS_INSTALLER_"


def _encode(fields: Mapping[str, str]) -> bytes:
    """Native journal protocol; values with newlines use the length-prefixed form."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "surrogateescape")
        if b"\n" in data:
            out += key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def _fallback_send(fields: Mapping[str, str]) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(_encode(fields), JOURNAL_SOCKET)
    except OSError:
        pass  # no journald: like sd_journal_send, drop silently


def _fallback_notify(state: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), addr)
    except OSError:
        pass


def _backends() -> tuple[Callable[[Mapping[str, str]], None], Callable[[str], None]]:
    try:
        from systemd import daemon, journal
    except ImportError:
        return _fallback_send, _fallback_notify

    def send(fields: Mapping[str, str]) -> None:
        f = dict(fields)
        message = f.pop("MESSAGE")
        journal.send(message, **f)

    def notify(state: str) -> None:
        daemon.notify(state)

    return send, notify


class JournalReporter:
    """Sends install stages and progress to the journal; usable as a progress sink."""

    def __init__(self, *, device: str | None = None, image: str | None = None) -> None:
        self.device = device
        self.image = image
        self._send, self._notify = _backends()

    def _fields(self, stage: str, message: str, **extra: Any) -> dict[str, str]:
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(extra.pop("priority", 6)),
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            f"{FIELD_PREFIX}STAGE": stage,
        }
        if self.device:
            fields[f"{FIELD_PREFIX}DEVICE"] = self.device
        if self.image:
            fields[f"{FIELD_PREFIX}IMAGE"] = self.image
        for key, value in extra.items():
            if value is not None:
                fields[f"{FIELD_PREFIX}{key.upper()}"] = str(value)
        return fields

    def stage(self, stage: str, message: str, *, priority: int = 6) -> None:
        """A lifecycle record (start, complete, failed...) and the matching STATUS=."""
        self._send(self._fields(stage, message, priority=priority))
        self._notify(f"STATUS={message}")

    def __call__(self, ev: ProgressEvent) -> None:
        message = ev.text()
        self._send(
            self._fields(
                ev.stage,
                message,
                bytes_done=ev.done,
                bytes_total=ev.total,
                percent=ev.percent,
            )
        )
        pct = f" {ev.percent}%" if ev.percent is not None else ""
        self._notify(f"STATUS={ev.stage}{pct}: {message}")

    def __enter__(self) -> JournalReporter:
        add_sink(self)
        return self

    def __exit__(self, *exc: object) -> None:
        remove_sink(self)
