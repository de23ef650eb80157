"""Parallel xz decoding for multi-block streams: decode independent blocks on all cores.

`xz -T` writes every block header with its compressed and uncompressed size, so the
stream can be cut into blocks without decoding and the blocks decoded concurrently
(liblzma releases the GIL). Each block is decoded by liblzma as a synthesized
one-block xz stream: our stream header (same check type) + the block as read + a
one-record index and footer. liblzma therefore verifies the block header CRC, the
sizes declared in it, the filter chain and the block's check (CRC32, CRC64 or SHA-256
in C — Python has no fast CRC64). We verify the real stream header, the index (CRC32,
records against the blocks actually decoded) and the footer ourselves, so truncation
and trailing data are rejected exactly as by the serial decoder.

Streams whose first block header carries no compressed size (single-threaded xz) go to
liblzma's own stream decoder unchanged; that is as fast as decoding gets for them.
Workers: one per core (fewer for huge dictionaries) take blocks in stream order; the
splitter admits blocks while their compressed + decoded bytes in flight stay under a
12 MiB budget, so finished blocks can wait for the consumer without idling a core.
"""

from __future__ import annotations

import lzma
import os
import queue
import threading
import zlib
from dataclasses import dataclass, field

from nestos_inst.errors import FormatError
from nestos_inst.io.decoders import XZ_MAGIC, Decoder, XzDecoder, new_xz
from nestos_inst.io.stream import Input

HEADER_SIZE = 12
FOOTER_MAGIC = b"YZ"
CHECK_SIZES = (0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64)
VLI_MAX = (1 << 63) - 1
OUT_CHUNK = 1 << 20
IN_CHUNK = 1 << 20
WHOLE_BLOCK = 4 << 20  # compressed blocks up to this size are handed over in one piece
FILTER_LZMA2 = 0x21
POLL = 0.1


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def decode_vli(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """xz variable-length integer at buf[pos:end] → (value, next position)."""
    limit = len(buf) if end is None else min(end, len(buf))
    value = 0
    for i in range(9):
        if pos + i >= limit:
            raise FormatError("truncated xz variable-length integer")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise FormatError("non-minimal xz variable-length integer")
            if value > VLI_MAX:
                raise FormatError("xz variable-length integer too large")
            return value, pos + i + 1
    raise FormatError("xz variable-length integer too long")


def encode_vli(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def parse_stream_flags(flags: bytes) -> int:
    """The check ID of a stream header/footer flags field (2 bytes)."""
    if len(flags) != 2 or flags[0] != 0 or flags[1] & 0xF0:
        raise FormatError("unsupported xz stream flags")
    return flags[1] & 0x0F


def parse_stream_header(head: bytes) -> int:
    """Validate a 12-byte xz stream header; return its check ID."""
    if len(head) < HEADER_SIZE:
        raise FormatError("unexpected end of xz stream (truncated input)")
    if head[:6] != XZ_MAGIC:
        raise FormatError("not an xz stream")
    if _crc32(head[6:8]) != int.from_bytes(head[8:12], "little"):
        raise FormatError("xz stream header CRC mismatch")
    return parse_stream_flags(head[6:8])


@dataclass(frozen=True)
class BlockHeader:
    """What we need from an xz block header; liblzma re-validates all of it."""

    size: int
    compressed: int | None
    uncompressed: int | None
    dict_size: int | None


def lzma2_dict_size(prop: int) -> int:
    bits = prop & 0x3F
    if bits > 40:
        raise FormatError("invalid LZMA2 dictionary size")
    if bits == 40:
        return 0xFFFFFFFF
    return (2 | (bits & 1)) << (bits // 2 + 11)


def parse_block_header(raw: bytes) -> BlockHeader:
    """Parse a complete block header (its first byte gives its length)."""
    if not raw or raw[0] == 0:
        raise FormatError("not an xz block header")
    size = (raw[0] + 1) * 4
    if len(raw) != size:
        raise FormatError("truncated xz block header")
    if _crc32(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
        raise FormatError("xz block header CRC mismatch")
    flags = raw[1]
    if flags & 0x3C:
        raise FormatError("unsupported xz block header flags")
    end = size - 4
    pos = 2
    compressed = uncompressed = None
    if flags & 0x40:
        compressed, pos = decode_vli(raw, pos, end)
        if compressed == 0:
            raise FormatError("invalid xz block compressed size")
    if flags & 0x80:
        uncompressed, pos = decode_vli(raw, pos, end)
    dict_size = None
    for _ in range((flags & 3) + 1):
        fid, pos = decode_vli(raw, pos, end)
        psize, pos = decode_vli(raw, pos, end)
        if pos + psize > end:
            raise FormatError("truncated xz filter properties")
        if fid == FILTER_LZMA2 and psize == 1:
            dict_size = lzma2_dict_size(raw[pos])
        pos += psize
    if any(raw[pos:end]):
        raise FormatError("non-zero xz block header padding")
    return BlockHeader(size, compressed, uncompressed, dict_size)


def synth_stream_header(check: int) -> bytes:
    flags = bytes((0, check))
    return XZ_MAGIC + flags + _crc32(flags).to_bytes(4, "little")


def synth_index_footer(check: int, unpadded: int, uncompressed: int) -> bytes:
    """One-record index + stream footer closing a synthesized one-block stream."""
    index = bytearray(b"\x00" + encode_vli(1) + encode_vli(unpadded) + encode_vli(uncompressed))
    index += bytes(-len(index) % 4)
    index += _crc32(bytes(index)).to_bytes(4, "little")
    tail = (len(index) // 4 - 1).to_bytes(4, "little") + bytes((0, check))
    return bytes(index) + _crc32(tail).to_bytes(4, "little") + tail + FOOTER_MAGIC


_END = object()


@dataclass
class _Job:
    """One block: input pieces in, decoded chunks out (both queues bounded)."""

    offset: int
    header: bytes
    unpadded: int
    cost: int  # bytes charged against the in-flight budget
    out_chunks: int = 4
    inp: queue.Queue[object] = field(default_factory=lambda: queue.Queue(maxsize=4))
    out: queue.Queue[object] = field(init=False)
    produced: int = 0

    def __post_init__(self) -> None:
        self.out = queue.Queue(maxsize=self.out_chunks)


@dataclass
class _Finish:
    """Producer's last word: the index records read from the stream."""

    records: list[tuple[int, int]]


class _Shared:
    """State shared with the threads (never the decoder itself, so it can be collected)."""

    def __init__(self, budget: int) -> None:
        self.stop = threading.Event()
        self.order: queue.Queue[object] = queue.Queue()  # jobs, in stream order
        self.work: queue.Queue[object] = queue.Queue()  # the same jobs, for the workers
        self.budget = budget
        self.inflight = 0
        self.cond = threading.Condition()

    def put(self, q: queue.Queue[object], item: object) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[object]) -> object:
        while not self.stop.is_set():
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                continue
        raise FormatError("xz decoding was cancelled")

    def charge(self, cost: int) -> bool:
        """Admit a block once the in-flight bytes allow it (always when none are)."""
        with self.cond:
            while not self.stop.is_set():
                if self.inflight == 0 or self.inflight + cost <= self.budget:
                    self.inflight += cost
                    return True
                self.cond.wait(POLL)
        return False

    def credit(self, cost: int) -> None:
        with self.cond:
            self.inflight -= cost
            self.cond.notify_all()


def _worker(sh: _Shared, check: int, memlimit: int | None) -> None:
    """Decode jobs in stream order of arrival: the oldest unfinished block always has a
    worker, so a later block waiting for its output to be consumed never starves it."""
    while True:
        try:
            job = sh.get(sh.work)
        except FormatError:  # cancelled
            return
        assert isinstance(job, _Job)
        _decode_block(sh, job, check, memlimit)


def _decode_block(sh: _Shared, job: _Job, check: int, memlimit: int | None) -> None:
    """Worker: decode one block as a synthesized stream, push output chunks in order."""
    try:
        d = new_xz(memlimit)
        pending = synth_stream_header(check) + job.header
        while True:
            item = sh.get(job.inp)
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            data = d.decompress(pending + item if pending else item, OUT_CHUNK)
            pending = b""
            while True:
                if data:
                    job.produced += len(data)
                    if not sh.put(job.out, data):
                        return
                if d.needs_input or d.eof:
                    break
                data = d.decompress(b"", OUT_CHUNK)
        if d.eof:
            raise FormatError("corrupt xz block")
        tail = synth_index_footer(check, job.unpadded, job.produced)
        d.decompress(tail, OUT_CHUNK)
        if not d.eof or d.unused_data:
            raise FormatError("corrupt xz block")
        sh.put(job.out, _END)
    except lzma.LZMAError as exc:
        err = FormatError(f"invalid xz block at offset {job.offset}")
        err.__cause__ = exc
        sh.put(job.out, err)
    except BaseException as exc:
        sh.put(job.out, exc)


class _XzParallel(Decoder):
    fmt = "xz"

    def __init__(
        self,
        inp: Input,
        *,
        concatenated: bool,
        give_back: bool,
        check: int,
        first: BlockHeader,
        raw: bytes,
        workers: int,
        memlimit: int | None,
        budget: int = 12 << 20,
    ) -> None:
        super().__init__(inp, concatenated=concatenated, give_back=give_back)
        self._sh = _Shared(budget)
        self._job: _Job | None = None
        self._blocks: list[tuple[int, int]] = []
        # The threads never reference `self`: an abandoned decoder is collected, and
        # its close() stops them.
        self._producer = threading.Thread(
            target=_produce_blocks,
            args=(self._sh, inp, check, first, raw),
            name="xz-split",
            daemon=True,
        )
        self._producer.start()
        for _ in range(workers):
            threading.Thread(
                target=_worker, args=(self._sh, check, memlimit), name="xz-block", daemon=True
            ).start()

    def decodes_ahead(self) -> bool:
        return True

    def _produce(self, n: int) -> bytes:
        sh = self._sh
        try:
            while True:
                if self._job is None:
                    item = sh.get(sh.order)
                    if isinstance(item, _Finish):
                        self._producer.join()
                        self._check_index(item.records)
                        self._shutdown()
                        self._end(b"")
                        return b""
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, _Job)
                    self._job = item
                job = self._job
                chunk = sh.get(job.out)
                if chunk is _END:
                    self._blocks.append((job.unpadded, job.produced))
                    self._job = None
                    sh.credit(job.cost)
                    continue
                if isinstance(chunk, BaseException):
                    raise chunk
                assert isinstance(chunk, bytes)
                return chunk
        except BaseException:
            self._shutdown()
            raise

    def _check_index(self, records: list[tuple[int, int]]) -> None:
        if records != self._blocks:
            raise FormatError("xz index does not match the stream's blocks")

    def _shutdown(self) -> None:
        self._sh.stop.set()

    def close(self) -> None:
        if not self.closed:
            self._shutdown()
        super().close()

    def __del__(self) -> None:
        # An abandoned decoder (an error upstream, a caller that stopped reading) must
        # not leave its threads waiting forever on queues nobody drains.
        self._sh.stop.set()


def _produce_blocks(
    sh: _Shared,
    inp: Input,
    check: int,
    first: BlockHeader,
    raw: bytes,
) -> None:
    """Splitter thread: cut the stream into blocks, then read index and footer."""
    offset = HEADER_SIZE
    header: BlockHeader | None = first
    check_size = CHECK_SIZES[check]
    unpadded_list: list[int] = []
    job: _Job | None = None
    try:
        while header is not None:
            if header.compressed is None:
                raise FormatError(
                    f"xz block at offset {offset} has no size fields after blocks that had "
                    "them; such streams are not supported"
                )
            body = header.compressed + (-header.compressed % 4) + check_size
            unpadded = header.size + header.compressed + check_size
            # Output of blocks up to 16 MiB is queued whole so a worker never waits for
            # the consumer; bigger ones stream through 4 chunks.
            out_size = header.uncompressed if header.uncompressed is not None else 1 << 62
            out_chunks = -(-out_size // OUT_CHUNK) + 1 if out_size <= 16 << 20 else 4
            cost = min(body, 4 * IN_CHUNK) + min(out_size, (out_chunks - 1) * OUT_CHUNK)
            job = _Job(offset, raw, unpadded, cost, out_chunks)
            if not sh.charge(cost):
                return
            sh.order.put(job)
            sh.work.put(job)
            left = body
            while left:
                piece = inp.read_exact(left if left <= WHOLE_BLOCK else min(left, IN_CHUNK))
                if not piece:
                    raise FormatError("unexpected end of xz stream (truncated input)")
                left -= len(piece)
                if not sh.put(job.inp, piece):
                    return
            if not sh.put(job.inp, _END):
                return
            job = None
            unpadded_list.append(unpadded)
            offset += header.size + body
            first_byte = inp.read_exact(1)
            if not first_byte:
                raise FormatError("unexpected end of xz stream (truncated input)")
            if first_byte == b"\x00":
                header = None
                break
            raw = first_byte + _need(inp, (first_byte[0] + 1) * 4 - 1)
            header = parse_block_header(raw)
        records = _read_index(inp, len(unpadded_list))
        if [r[0] for r in records] != unpadded_list:
            raise FormatError("xz index does not match the stream's blocks")
        sh.order.put(_Finish(records))
    except BaseException as exc:
        if job is not None:  # its worker waits for input: hand it the error
            sh.put(job.inp, exc)
        sh.order.put(exc)


def _need(inp: Input, n: int) -> bytes:
    data = inp.read_exact(n)
    if len(data) < n:
        raise FormatError("unexpected end of xz stream (truncated input)")
    return data


def _read_vli(inp: Input, acc: bytearray) -> int:
    start = len(acc)
    for _ in range(9):
        byte = _need(inp, 1)
        acc += byte
        if not byte[0] & 0x80:
            return decode_vli(bytes(acc), start)[0]
    raise FormatError("xz variable-length integer too long")


def _read_index(inp: Input, blocks: int) -> list[tuple[int, int]]:
    """Index (indicator already read) + footer; validates CRCs and backward size."""
    acc = bytearray(b"\x00")
    count = _read_vli(inp, acc)
    if count != blocks:
        raise FormatError("xz index does not match the stream's blocks")
    records = []
    for _ in range(count):
        unpadded = _read_vli(inp, acc)
        uncompressed = _read_vli(inp, acc)
        records.append((unpadded, uncompressed))
    pad = _need(inp, -len(acc) % 4)
    if any(pad):
        raise FormatError("non-zero xz index padding")
    acc += pad
    if _crc32(bytes(acc)) != int.from_bytes(_need(inp, 4), "little"):
        raise FormatError("xz index CRC mismatch")
    footer = _need(inp, HEADER_SIZE)
    if footer[10:12] != FOOTER_MAGIC:
        raise FormatError("invalid xz stream footer")
    if _crc32(footer[4:10]) != int.from_bytes(footer[:4], "little"):
        raise FormatError("xz stream footer CRC mismatch")
    if int.from_bytes(footer[4:8], "little") != (len(acc) + 4) // 4 - 1:
        raise FormatError("xz stream footer backward size mismatch")
    return records


def workers_for(dict_size: int | None) -> int:
    """Decoding threads: one per core, fewer when each decoder's dictionary is big."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, min(cores or 1, 4))
    if dict_size is not None and dict_size > 16 << 20:
        n = 1  # xz -8/-9: each decoder allocates its 32/64 MiB dictionary
    return n


def xz_decoder(
    inp: Input,
    *,
    concatenated: bool,
    give_back: bool = False,
    memlimit: int | None = None,
    parallel: bool = True,
) -> Decoder:
    """The decoder for one xz stream: parallel when block headers carry sizes."""
    serial = {"concatenated": concatenated, "give_back": give_back}
    if not parallel:
        return XzDecoder(inp, memlimit=memlimit, **serial)
    seen = inp.read_exact(HEADER_SIZE + 1)
    try:
        check = parse_stream_header(seen)
        if len(seen) <= HEADER_SIZE or seen[HEADER_SIZE] == 0:
            raise FormatError("no blocks")
        more = inp.read_exact((seen[HEADER_SIZE] + 1) * 4 - 1)
        seen += more
        raw = seen[HEADER_SIZE:]
        first = parse_block_header(raw)
        if first.compressed is None:
            raise FormatError("no block sizes")
    except FormatError:
        # Anything unusual: liblzma's stream decoder decides (and names the error).
        inp.unread(seen)
        return XzDecoder(inp, memlimit=memlimit, **serial)
    return _XzParallel(
        inp,
        concatenated=concatenated,
        give_back=give_back,
        check=check,
        first=first,
        raw=raw,
        workers=workers_for(first.dict_size),
        memlimit=memlimit,
    )
