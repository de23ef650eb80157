"""Why a document is not JSON, in plain words (not `Expecting value: line 1 column 1`)."""

from __future__ import annotations

import json

_PHRASES = {
    "Expecting value": "expected a value",
    "Expecting property name enclosed in double quotes": "expected a quoted property name",
    "Expecting ',' delimiter": "expected ',' between values",
    "Expecting ':' delimiter": "expected ':' after a property name",
    "Extra data": "unexpected data after the document",
    "Unterminated string starting at": "a string is not terminated",
    "Invalid control character at": "a control character inside a string",
    "Invalid \\escape": "an invalid escape sequence",
}


def json_error_text(exc: BaseException) -> str:
    """One clause for a failed json.loads() of bytes."""
    if isinstance(exc, json.JSONDecodeError):
        what = _PHRASES.get(exc.msg, exc.msg[:1].lower() + exc.msg[1:])
        if exc.pos == 0 and exc.msg == "Expecting value":
            return "not JSON (empty, or no JSON value at the start)"
        return f"not valid JSON: {what} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid JSON: not UTF-8 text (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    return f"not valid JSON: {exc}"
