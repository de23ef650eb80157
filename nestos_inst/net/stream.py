"""Stream metadata (docs/compat.md#stream-metadata, #list-stream): URL resolution, models, artifact
lookup.

Only the fields the installer uses are modelled; unknown keys are ignored. A missing
required key is reported with its path in the document
(``architectures/x86_64/artifacts/metal/formats/raw.xz/disk: missing field `signature```).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import FormatError, NestosError
from ..jsontext import json_error_text
from .http import fetch_bytes

STREAM_JSON_LIMIT = 64 << 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Artifact(_Model):
    location: str
    signature: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    uncompressed_sha256: str | None = Field(default=None, alias="uncompressed-sha256")


class Platform(_Model):
    formats: dict[str, dict[str, Artifact]]


class Arch(_Model):
    artifacts: dict[str, Platform]


class Stream(_Model):
    architectures: dict[str, Arch]

    def artifacts(self, arch: str, platform: str, fmt: str) -> dict[str, Artifact]:
        try:
            found = self.architectures[arch].artifacts[platform].formats[fmt]
        except KeyError:
            found = None
        if not found:
            raise NestosError(
                f"couldn't find architecture {arch}, platform {platform}, format {fmt} "
                "in stream metadata"
            )
        return found

    def rows(self) -> list[tuple[str, str, str]]:
        """(architecture, platform, format) for every format, sorted."""
        return sorted(
            (arch, platform, fmt)
            for arch, a in self.architectures.items()
            for platform, p in a.artifacts.items()
            for fmt in p.formats
        )


def stream_url(stream: str, base_url: str) -> str:
    """RFC 3986 resolution of `<stream>.json` against the base (no slash: last segment goes)."""
    url = urljoin(base_url, f"{stream}.json")
    if urlsplit(url).scheme not in ("http", "https"):
        raise NestosError(f"unsupported stream URL '{url}': expected http or https")
    return url


def _path(loc: tuple[int | str, ...]) -> str:
    return "/".join(str(part) for part in loc) or "(top level)"


def parse_stream(data: bytes) -> Stream:
    """Parse stream JSON; errors name the offending place in the document."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError("decoding stream metadata") from FormatError(json_error_text(exc))
    try:
        return Stream.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] == "missing":
            where, name = _path(loc[:-1]), loc[-1]
            reason = f"{where}: missing field `{name}`"
        else:
            reason = f"{_path(loc)}: {first['msg']}"
        raise FormatError("decoding stream metadata") from FormatError(reason)


def fetch_stream(url: str, *, retries: int | None = 0) -> Stream:
    resp, body = fetch_bytes(url, retries=retries, limit=STREAM_JSON_LIMIT)
    if resp.status != 200:
        raise NestosError(
            f"stream metadata fetch from {url} failed: {resp.status} {resp.reason}".rstrip()
        )
    return parse_stream(body)


@dataclass(frozen=True)
class Selection:
    """Which artifacts of which stream; `custom_base` decides the message wording."""

    stream: str
    architecture: str
    platform: str
    fmt: str
    base_url: str
    custom_base: bool

    @property
    def url(self) -> str:
        return stream_url(self.stream, self.base_url)

    def description(self, os_name: str) -> str:
        if self.custom_base:
            return (
                f"Downloading {self.architecture} {self.platform} image ({self.fmt}) and "
                f"signature referenced from {self.url}"
            )
        return (
            f"Downloading {os_name} {self.stream} {self.architecture} {self.platform} "
            f"image ({self.fmt}) and signature"
        )


def format_table(rows: list[tuple[str, str, str]]) -> str:
    """The list-stream table of docs/compat.md#list-stream (header row first, no trailing
    spaces)."""
    table = [("Architecture", "Platform", "Format"), *rows]
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    return "".join(f"{a:<{w0}}  {p:<{w1}}  {f}\n" for a, p, f in table)
