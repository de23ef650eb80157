"""`--fetch-retries N|infinite`: the one parser, shared by `download` and `install`.

Kept free of heavy imports for CLI start-up.
"""

from __future__ import annotations

import re
from typing import Literal

INFINITE: Literal["infinite"] = "infinite"
FetchRetries = int | Literal["infinite"]
_U32 = 0xFFFFFFFF


def parse_fetch_retries(text: str) -> FetchRetries:
    """A u32 retry count or the literal `infinite` (docs/compat.md#http-retries)."""
    if text == INFINITE:
        return INFINITE
    if not re.fullmatch(r"[0-9]+", text) or int(text) > _U32:
        raise ValueError(f"invalid value '{text}': expected a number or 'infinite'")
    return int(text)


def parse_retries(text: str) -> int | None:
    """The same, as the network layer counts it: None means no limit."""
    value = parse_fetch_retries(text)
    return None if value == INFINITE else int(value)
