"""Streaming decompression: round trips, truncation, trailing data, 1-byte reads."""

from __future__ import annotations

import io
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.io.compress import TRAILING_DATA, PushbackReader, open_decompressed, sniff
from nestos_inst.io.stream import DecodesInto
from tests.helpers import iomedia

DATA = iomedia.payload(200_000)
ZERO_MIB = bytes(1 << 20)

ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": iomedia.gz,
    "xz-single": iomedia.xz_single,
    "xz-multi": iomedia.xz_multiblock,
    "xz-crc32": lambda d: iomedia.xz_single(d, lzma.CHECK_CRC32),
    "xz-sha256": lambda d: iomedia.xz_single(d, lzma.CHECK_SHA256),
    "xz-none": lambda d: iomedia.xz_single(d, lzma.CHECK_NONE),
    "xz-multi-crc32": lambda d: iomedia.xz_multiblock(d, check="crc32"),
    "xz-multi-sha256": lambda d: iomedia.xz_multiblock(d, check="sha256"),
    "xz-multi-none": lambda d: iomedia.xz_multiblock(d, check="none"),
    "zstd": lambda d: iomedia.zst(d, "--no-check"),
    "zstd-checksum": lambda d: iomedia.zst(d, "--check"),
}


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def encoded(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    name: str = request.param
    return name, ENCODERS[name](DATA)


def decode(data: bytes, *, concatenated: bool = False, step: int = 1 << 20) -> bytes:
    reader = open_decompressed(io.BytesIO(data), concatenated=concatenated)
    parts: list[bytes] = []
    while True:
        chunk = reader.read(step)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def test_sniff() -> None:
    assert sniff(b"\x1f\x8b\x08") == "gzip"
    assert sniff(b"\xfd7zXZ\x00") == "xz"
    assert sniff(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert sniff(b"\x50\x2a\x4d\x18\x00") == "zstd"  # skippable frame
    assert sniff(b"\x28\xb5\x2f\xfd") == "raw"  # needs more than the magic
    assert sniff(b"") == "raw"
    assert sniff(b"hello") == "raw"
    for blob, fmt in (
        (iomedia.gz(b"x"), "gzip"),
        (iomedia.xz_single(b"x"), "xz"),
        (iomedia.zst(b"x"), "zstd"),
        (b"x", "raw"),
    ):
        assert getattr(open_decompressed(io.BytesIO(blob)), "format") == fmt  # noqa: B009


def test_round_trip(encoded: tuple[str, bytes]) -> None:
    _, data = encoded
    assert decode(data) == DATA
    assert decode(data, step=7777) == DATA


def test_one_byte_reads(encoded: tuple[str, bytes]) -> None:
    _, data = encoded
    assert decode(data, step=1) == DATA


def test_raw_passthrough() -> None:
    assert decode(DATA) == DATA
    assert decode(b"") == b""
    assert decode(b"ab") == b"ab"


def test_trailing_byte_rejected(encoded: tuple[str, bytes]) -> None:
    name, data = encoded
    extras = [b"\0", b"x", b"\0\0\0\0", DATA[:100]]
    if not name.startswith("zstd"):  # more zstd frames are part of the stream
        extras.append(data)
    for extra in extras:
        with pytest.raises(FormatError, match=TRAILING_DATA):
            decode(data + extra)


def test_truncation_rejected(encoded: tuple[str, bytes]) -> None:
    _, data = encoded
    cuts = sorted(
        {1, 2, 5, 6, 11, 12, 13, 20, 100, len(data) // 2, len(data) - 40}
        | {len(data) - k for k in range(1, 14)}
    )
    for cut in cuts:
        if 0 < cut < len(data) and sniff(data[:cut]) != "raw":
            with pytest.raises(FormatError):
                decode(data[:cut])


def test_concatenated_leaves_rest(encoded: tuple[str, bytes]) -> None:
    _, data = encoded
    src = io.BytesIO(data + b"abcdefg")
    reader = open_decompressed(src, concatenated=True)
    assert reader.read() == DATA
    assert src.read() == b"abcdefg"


def test_concatenated_pipe_with_pushback(encoded: tuple[str, bytes]) -> None:
    _, data = encoded

    class Pipe(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._b = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
            return self._b.readinto(b)

    src = PushbackReader(io.BufferedReader(Pipe(data + b"rest"), 4096))
    reader = open_decompressed(src, concatenated=True)
    assert reader.read() == DATA
    assert src.read() == b"rest"


@pytest.mark.parametrize(
    "name",
    sorted(set(ENCODERS) - {"xz-none", "xz-multi-none", "zstd"}),  # these have no check
)
def test_corrupted_payload_rejected(name: str) -> None:
    data = ENCODERS[name](DATA)
    for pos in (len(data) // 3, len(data) // 2, len(data) - 30):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        try:
            out = decode(bytes(bad))
        except FormatError:
            continue
        raise AssertionError(f"corruption at {pos} not detected ({out == DATA})")


def test_decoder_errors_chain() -> None:
    bad = bytearray(iomedia.gz(DATA))
    bad[3] = 0xFF  # reserved gzip flag bits
    with pytest.raises(FormatError) as info:
        decode(bytes(bad))
    assert info.value.__cause__ is not None


def test_zstd_multiple_frames_and_skippable() -> None:
    a, b = DATA[:50000], DATA[50000:]
    skippable = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    joined = iomedia.zst(a) + skippable + iomedia.zst(b)
    assert decode(joined) == DATA
    src = io.BytesIO(joined + b"tail")
    assert open_decompressed(src, concatenated=True).read() == DATA
    assert src.read() == b"tail"


def _readinto_all(reader: object, size: int) -> bytes:
    """Everything readinto1 gives, into a buffer of `size` bytes at a time."""
    assert isinstance(reader, DecodesInto)
    buf = bytearray(size)
    out = bytearray()
    while n := reader.readinto1(memoryview(buf)):
        out += buf[:n]
    return bytes(out)


@pytest.mark.parametrize("size", [1, 4096, 1 << 20, 5 << 20])
def test_zstd_readinto1_decodes_the_same_bytes(size: int) -> None:
    """DecodesInto (the direct writer's buffers filled by the decoder): the same bytes
    as read(), across frames and skippable frames, after a smaller read() too, and the
    same end checks (finish, trailing data)."""
    a, b = DATA[:50000], DATA[50000:]
    skippable = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    joined = iomedia.zst(a) + skippable + iomedia.zst(b)
    reader = open_decompressed(io.BytesIO(joined))
    head = reader.read(1000)  # what write_image does with the first MiB
    assert head + _readinto_all(reader, size) == DATA
    reader.finish()
    with pytest.raises(FormatError, match=TRAILING_DATA):
        _readinto_all(open_decompressed(io.BytesIO(joined + b"\0")), size)
    with pytest.raises(FormatError, match="truncated"):
        _readinto_all(open_decompressed(io.BytesIO(joined[:-5])), size)


def test_only_zstd_decodes_into_buffers() -> None:
    for blob in (iomedia.gz(DATA), iomedia.xz_single(DATA), iomedia.xz_multiblock(DATA), DATA):
        assert not isinstance(open_decompressed(io.BytesIO(blob)), DecodesInto)
    assert isinstance(open_decompressed(io.BytesIO(iomedia.zst(DATA))), DecodesInto)


def test_gzip_second_member_is_trailing_data() -> None:
    with pytest.raises(FormatError, match=TRAILING_DATA):
        decode(iomedia.gz(DATA) + iomedia.gz(b"more"))


def test_xz_second_stream_and_padding_are_trailing_data() -> None:
    x = iomedia.xz_single(DATA)
    for extra in (x, b"\0\0\0\0"):
        with pytest.raises(FormatError, match=TRAILING_DATA):
            decode(x + extra)


def test_bomb_output_is_bounded() -> None:
    """64 MiB of zeros comes out in bounded pieces, whatever the ratio."""
    size = 64 << 20
    for blob in (iomedia.gz(bytes(size)), iomedia.zst(bytes(size)), iomedia.xz_single(bytes(size))):
        reader = open_decompressed(io.BytesIO(blob))
        total = 0
        while chunk := reader.read(1 << 20):
            assert len(chunk) <= 1 << 20
            total += len(chunk)
        assert total == size


@pytest.mark.compat
@pytest.mark.parametrize("ext", ["gz", "xz", "zst"])
def test_upstream_trailing_data_vectors(upstream: Path, ext: str) -> None:
    data = (upstream / "verify" / f"1M.{ext}").read_bytes()
    assert decode(data) == ZERO_MIB
    with pytest.raises(FormatError):
        decode(data[:-1])
    with pytest.raises(FormatError, match=TRAILING_DATA):
        decode(data + b"\0")
    src = io.BytesIO(data + b"\0")
    assert open_decompressed(src, concatenated=True).read() == ZERO_MIB
    assert src.read() == b"\0"


@pytest.mark.compat
@pytest.mark.parametrize("ext", ["xz", "zst"])
def test_upstream_small_decode(upstream: Path, ext: str) -> None:
    data = (upstream / "verify" / f"1M.{ext}").read_bytes()
    src = io.BytesIO(data + b"abcdefg")
    reader = open_decompressed(src, concatenated=True)
    out = bytearray()
    while byte := reader.read(1):
        out += byte
    assert out == ZERO_MIB
    assert src.read() == b"abcdefg"


class Trickle(io.RawIOBase):
    """A source that hands out at most a few bytes per read (like a slow socket)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._b = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = self._step if size is None or size < 0 else min(size, self._step)
        return self._b.read(n)


@pytest.mark.parametrize("step", [1, 3, 4099])
def test_short_reads_from_source(encoded: tuple[str, bytes], step: int) -> None:
    _, data = encoded
    data_src = Trickle(data, step)
    assert open_decompressed(data_src).read() == DATA


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"\x1f\x8b\x08\x00", b"\xfd7zXZ\x00\x00\x04", b"\x28\xb5\x2f\xfd", b""]),
    st.binary(max_size=300),
    st.booleans(),
)
def test_fuzz_decoders_raise_only_our_errors(magic: bytes, body: bytes, concat: bool) -> None:
    """Garbage after a format's magic: data or one of our errors, never a foreign one."""
    try:
        decode(magic + body, concatenated=concat)
    except NestosError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["gzip", "zstd", "xz-multi"]))
def test_fuzz_mutated_streams(pos: int, value: int, name: str) -> None:
    blob = bytearray(ENCODERS[name](DATA[:20_000]))
    blob[pos % len(blob)] = value
    try:
        decode(bytes(blob))
    except NestosError:
        pass
