"""Where trusted signing keys come from, per profile.

Signature checks trust exactly the armored public keys found here, in this order:

1. built-in keys shipped inside the Python package, ``data/keys/<profile>/*.asc``
   (the CoreOS profile carries the Fedora keys upstream publishes; NestOS has none);
2. the distribution directory ``PREFIX/share/nestos-installer/keys.d/`` (read-only,
   owned by the package: a distributor puts its release keys there);
3. the admin directory ``/etc/nestos-installer/keys.d/`` (local keys);
4. every ``--keyring FILE``, in the order given.

In both directories, ``*.asc`` files directly inside apply to every profile and
``<profile>/*.asc`` (``nestos/``, ``coreos/``) to that profile only. PREFIX is the
prefix the package was installed under (``/usr`` for a distribution package,
``/usr/local`` for ``make install PREFIX=/usr/local``, the venv for a pip install into
one), so no build-time path substitution is needed. The environment variables
``NESTOS_INSTALLER_DIST_KEYS_DIR`` and ``NESTOS_INSTALLER_ADMIN_KEYS_DIR`` replace the
two directories (tests and image builders use them; they cannot add trust that the
person setting the environment could not add with ``--keyring`` anyway).

This module only finds files: importing and checking them is verify.py's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import NestosError
from .profile import Profile

BUILTIN_KEY_DIR = Path(__file__).resolve().parent / "data" / "keys"
ADMIN_KEY_DIR = Path("/etc/nestos-installer/keys.d")
DIST_SUBDIR = Path("share/nestos-installer/keys.d")
DIST_ENV = "NESTOS_INSTALLER_DIST_KEYS_DIR"
ADMIN_ENV = "NESTOS_INSTALLER_ADMIN_KEYS_DIR"
FALLBACK_PREFIX = Path("/usr")
# --insecure with a signature present: said once, so nobody believes it was checked.
INSECURE_SKIP = "Signature found but not verified, as requested (--insecure)"


def install_prefix(pkg: Path | None = None) -> Path:
    """The prefix this package (directory `pkg`) was installed under.

    ``PREFIX/lib/pythonX.Y/site-packages/nestos_inst`` (and Debian's
    ``PREFIX/lib/python3/dist-packages/nestos_inst``) give PREFIX; a source checkout
    or an editable install has no such layout and gets ``/usr``.
    """
    pkg = pkg or Path(__file__).resolve().parent
    site, pyver, lib = pkg.parent, pkg.parent.parent, pkg.parent.parent.parent
    if (
        site.name in ("site-packages", "dist-packages")
        and pyver.name.startswith("python")
        and lib.name in ("lib", "lib64")
    ):
        return lib.parent
    return FALLBACK_PREFIX


def dist_key_dir() -> Path:
    override = os.environ.get(DIST_ENV)
    return Path(override) if override else install_prefix() / DIST_SUBDIR


def admin_key_dir() -> Path:
    override = os.environ.get(ADMIN_ENV)
    return Path(override) if override else ADMIN_KEY_DIR


def _armored(directory: Path) -> list[Path]:
    """Sorted ``*.asc`` regular files; a missing directory simply has none."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise NestosError(f"reading key directory {directory}") from exc
    return [p for p in entries if p.suffix == ".asc" and p.is_file()]


def key_dirs(profile: Profile) -> list[Path]:
    """Every directory searched for `profile`, in trust order (for docs and errors)."""
    out = [BUILTIN_KEY_DIR / profile.name]
    for base in (dist_key_dir(), admin_key_dir()):
        out += [base, base / profile.name]
    return out


def trusted_key_files(profile: Profile, keyrings: Iterable[str | Path] = ()) -> list[Path]:
    """The key files to trust for `profile`: directories first, then `--keyring`s."""
    found: list[Path] = []
    for directory in key_dirs(profile):
        found += _armored(directory)
    return found + [Path(k) for k in keyrings]


def no_keys_message(profile: Profile) -> str:
    """What to do when `profile` has no trusted key at all (one line, no jargon)."""
    published = (
        f"no {profile.os_name} signing key is published"
        if not _armored(BUILTIN_KEY_DIR / profile.name)
        else f"no trusted key for {profile.os_name} images"
    )
    return (
        f"cannot verify the image signature: {published}. "
        f"Pass the distributor's public key with --keyring FILE, "
        f"or copy it (armored, *.asc) into {admin_key_dir()}/, "
        f"or skip verification with --insecure"
    )


def require_trusted_keys(profile: Profile, keyrings: Iterable[str | Path] = ()) -> list[Path]:
    """trusted_key_files(), failing with no_keys_message() when there are none."""
    files = trusted_key_files(profile, keyrings)
    if not files:
        raise NestosError(no_keys_message(profile))
    return files
