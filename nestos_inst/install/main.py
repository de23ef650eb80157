"""The install flow of compat-spec §7: validate, check, write, customise, or wipe."""

from __future__ import annotations

from ..profile import NESTOS, Profile
from .config import InstallConfig


def install(cfg: InstallConfig, *, profile: Profile = NESTOS) -> None:
    """Install the image described by `cfg`; raises NestosError (`install failed`)."""
    raise NotImplementedError
