"""`--fetch-retries N|infinite` parsing, kept free of heavy imports for CLI start-up."""

from __future__ import annotations

import re


def parse_retries(text: str) -> int | None:
    """A u32 retry count, or None for the literal `infinite` (compat-spec §5.5)."""
    if text == "infinite":
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) > 0xFFFFFFFF:
        raise ValueError(f"invalid value '{text}': expected a number or 'infinite'")
    return int(text)
