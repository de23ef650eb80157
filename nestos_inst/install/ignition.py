"""The Ignition config given to install: digest spec, fetch, JSON check
(docs/compat.md#ignition-hash, #install-validation)."""

from __future__ import annotations

import binascii
import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import NestosError, VerifyError
from ..io.files import IGNITION_LIMIT, read_limited
from ..jsontext import json_error_text

_LENGTHS = {"sha256": 32, "sha512": 64}


@dataclass(frozen=True)
class IgnitionHash:
    """`sha256-<hex>` / `sha512-<hex>`; the display form is lower-case."""

    kind: str
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> IgnitionHash:
        kind, sep, hexpart = text.partition("-")
        if not sep or not kind:
            raise NestosError(f"failed to detect hash-type and digest in '{text}'")
        if kind not in _LENGTHS:
            raise NestosError(f"unknown hash type '{kind}'")
        try:
            digest = binascii.unhexlify(hexpart)
        except (binascii.Error, ValueError) as exc:
            raise NestosError("decoding hex digest") from exc
        if len(digest) != _LENGTHS[kind]:
            raise NestosError(f"wrong digest length ({len(digest) * 8})")
        return cls(kind, digest)

    def __str__(self) -> str:
        return f"{self.kind}-{self.digest.hex()}"

    def verify(self, data: bytes) -> None:
        computed = hashlib.new(self.kind, data).digest()
        if computed != self.digest:
            raise VerifyError("failed to validate Ignition configuration digest") from (
                VerifyError(
                    f"hash mismatch, computed '{computed.hex()}' but expected '{self.digest.hex()}'"
                )
            )


def check_ignition_url(url: str, *, has_hash: bool, insecure: bool) -> None:
    """docs/compat.md#install-validation: http needs a digest or --insecure-ignition; only http(s)
    allowed."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for a stray "["
        raise NestosError(f"invalid URL '{url}'") from exc
    if scheme == "http":
        if not (has_hash or insecure):
            raise NestosError(
                "refusing to fetch Ignition config over HTTP without --ignition-hash "
                "or --insecure-ignition"
            )
    elif scheme != "https":
        raise NestosError(f"unknown protocol for URL '{url}'")


def check_json(data: bytes) -> None:
    """The config must be JSON (any value); the Ignition spec version is not checked."""
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NestosError("parsing specified Ignition config") from NestosError(
            json_error_text(exc)
        )


def read_ignition_file(path: Path) -> bytes:
    data = read_limited(path, IGNITION_LIMIT, message=f"opening source Ignition config {path}")
    check_json(data)
    return data
