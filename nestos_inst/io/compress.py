"""Sniff and stream-decompress gzip / xz / zstd: the entry to the decompressor family
(docs/compat.md#signatures, #image-write).

`open_decompressed` is the decompress stage for anything that reads one compressed
stream from a source (install, download, osmet and minimal-ISO data); `decoder_for`
serves readers of several streams in a row (initrds), on an Input they keep reading
after each stream. The end-of-stream rules and the bounded output are those of
io/decoders.py; multi-block xz is decoded on every core by io/xzpar.py.
"""

from __future__ import annotations

from nestos_inst.errors import FormatError
from nestos_inst.io.decoders import (
    Decoder,
    Format,
    GzipDecoder,
    RawDecoder,
    ZstdDecoder,
    sniff,
)
from nestos_inst.io.stream import TRAILING_DATA, Input, Source
from nestos_inst.io.xzpar import xz_decoder

__all__ = [
    "TRAILING_DATA",
    "Decoder",
    "Format",
    "Input",
    "PushbackReader",
    "decoder_for",
    "open_decompressed",
    "passthrough",
    "sniff",
]

SNIFF_LEN = 6

# A source that can take bytes back: wrap a pipe in it to decode concatenated streams
# and read on after them.
PushbackReader = Input


def decoder_for(
    inp: Input,
    *,
    concatenated: bool,
    memlimit: int | None = None,
    expect: Format | None = None,
    parallel: bool = True,
    give_back: bool = False,
) -> Decoder:
    """The decoder for the stream starting at `inp` (format sniffed from its first bytes).

    `concatenated`: stop at the end of the stream and leave what follows in `inp`
    (initrd archives); otherwise `inp` must end with the stream. `memlimit` caps the xz
    decoder's memory; `expect` refuses any other format (including uncompressed);
    `parallel=False` keeps multi-block xz on one core. `give_back` also returns the
    bytes left over to `inp`'s own source (see Input.give_back).
    """
    fmt = sniff(inp.peek(SNIFF_LEN))
    if expect is not None and fmt != expect:
        raise FormatError(f"decoding {expect} stream") from FormatError(
            f"not an {expect} stream" if expect == "xz" else f"not a {expect} stream"
        )
    flags = {"concatenated": concatenated, "give_back": give_back}
    if fmt == "gzip":
        return GzipDecoder(inp, **flags)
    if fmt == "xz":
        return xz_decoder(inp, memlimit=memlimit, parallel=parallel, **flags)
    if fmt == "zstd":
        return ZstdDecoder(inp, **flags)
    return RawDecoder(inp, **flags)


def open_decompressed(
    src: Source,
    *,
    concatenated: bool = False,
    memlimit: int | None = None,
    expect: Format | None = None,
    parallel: bool = True,
) -> Decoder:
    """A readable stream of the decompressed bytes of `src` (format sniffed).

    Non-concatenated: exactly one gzip member / one xz stream / zstd frames, the whole
    source is consumed and any byte after the stream raises FormatError
    ("found trailing data after compressed stream"); truncation raises FormatError.
    Concatenated: the stream's end leaves any following bytes unread in `src` (an
    Input/PushbackReader takes them back, seekable sources are sought back).

    `src` is any Source: a file object, a VerifiedReader, another Decoder. The result
    is a Decoder: a Stream (read fills, read1 hands out decoded pieces uncopied,
    finish, close), itself a Source for the next stage.
    """
    if isinstance(src, Input):
        inp = src
        give_back = False
    else:
        inp = Input(src)
        give_back = concatenated
    decoder = decoder_for(
        inp,
        concatenated=concatenated,
        memlimit=memlimit,
        expect=expect,
        parallel=parallel,
        give_back=give_back,
    )
    return decoder


def passthrough(src: Source) -> Decoder:
    """The bytes of `src` unchanged, behind the same Stream interface as a decoder (for
    writing an image that is already uncompressed, e.g. `install --no-decompress`)."""
    return RawDecoder(src if isinstance(src, Input) else Input(src), concatenated=False)
