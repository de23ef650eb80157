"""xz decoding: parallel block decoding when block headers carry sizes (placeholder)."""

from __future__ import annotations

from nestos_inst.io.compress import _Decoder, _Input, _XzDecoder


def xz_decoder(inp: _Input, concatenated: bool) -> _Decoder:
    """The decoder for one xz stream."""
    return _XzDecoder(inp, concatenated)
