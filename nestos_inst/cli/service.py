"""CLI registration for the service commands (filled in by its issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Registry


def register(reg: Registry) -> None:
    """Register this module's working commands."""
