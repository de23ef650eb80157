"""Third-party modules we need, and what to tell the user when one is missing.

pip installs pydantic, httpx, PyYAML and zstandard from pyproject.toml, but a copy run
from a checkout, or a distribution package with a dependency left out, may lack one.
The GPGME binding (module ``gpg``) is never pip-installable: it comes with GPGME
itself, as the distribution package ``python3-gpg``. Commands import these lazily, so
a missing one shows up as ModuleNotFoundError deep inside; the entry point turns that
into one ``Error:`` line naming the package to install, instead of a traceback.
"""

from __future__ import annotations

import importlib.util

# top-level module -> (what it is for, distribution package, pip name or None)
KNOWN: dict[str, tuple[str, str, str | None]] = {
    "gpg": ("GPGME bindings (image signature checks)", "python3-gpg", None),
    "pydantic": ("data validation", "python3-pydantic", "pydantic"),
    "pydantic_core": ("data validation", "python3-pydantic", "pydantic"),
    "httpx": ("HTTP client", "python3-httpx", "httpx"),
    "httpcore": ("HTTP client", "python3-httpx", "httpx"),
    "h11": ("HTTP client", "python3-httpx", "httpx"),
    "yaml": ("YAML parser", "python3-yaml", "PyYAML"),
    "zstandard": ("zstd decompressor", "python3-zstandard", "zstandard"),
    "systemd": ("systemd bindings (service mode)", "python3-systemd", None),
    "pyudev": ("udev bindings", "python3-pyudev", None),
}


def missing_module_message(name: str | None) -> str | None:
    """The user-facing text for a missing module, or None when it is not one of ours."""
    if not name:
        return None
    top = name.split(".")[0]
    if top not in KNOWN:
        return None
    what, distro, pip_name = KNOWN[top]
    how = f"install the {distro} package"
    if pip_name:
        how += f" (or `pip install {pip_name}`)"
    text = f"the Python module '{top}' ({what}) is not installed: {how}"
    if top == "gpg":
        text += "; --insecure skips signature checks and does not need it"
    return text


def require(name: str) -> None:
    """Fail early (before any write) with missing_module_message() if `name` is absent."""
    from .errors import NestosError

    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise NestosError(missing_module_message(name) or f"the Python module '{name}' is missing")
