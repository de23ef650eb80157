"""YAML documents from files we do not control (installer config files, nmstate).

PyYAML's safe loader reports most mistakes as `YAMLError`, but not all: an escape
beyond U+10FFFF in a double-quoted string (`"\\U00110000"`) raises ValueError or
OverflowError from inside its scanner, and very deep nesting raises RecursionError.
`load` turns every one of them into a FormatError, so a bad file is an error line.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import FormatError


def load(text: bytes | str) -> Any:
    """`yaml.safe_load(text)`; any failure is a FormatError with the loader's reason."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(yaml_problem(exc)) from None
    except (ValueError, OverflowError) as exc:  # PyYAML's scanner on a bad escape
        raise FormatError(f"invalid escape sequence in a quoted string: {exc}") from None
    except RecursionError:
        raise FormatError("document nested too deeply") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line report (`in "<byte string>", line 2, column 1:` plus an
    excerpt) as one line in the user's terms: what is wrong, and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"{exc.problem}{where}{context}"
    return " ".join(str(exc).split())
