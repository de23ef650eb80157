"""httpx client: retries (docs/compat.md#http-retries), resume with Range/If-Range, restart when
Range is ignored."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from nestos_inst.errors import NestosError, chain
from nestos_inst.net import http
from tests.helpers.httpserver import Server, http_server

DATA = os.urandom(3 << 20) + b"end"


@pytest.fixture
def server() -> Iterator[Server]:
    with http_server() as srv:
        yield srv


@pytest.fixture
def sleeps() -> list[float]:
    return []


def fake_sleep(record: list[float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(delay: float) -> None:
        record.append(delay)

    return sleep


def get_all(server: Server, path: str, retries: int | None, record: list[float]) -> bytes:
    resp = http.fetch(server.url(path), retries=retries, sleep=fake_sleep(record))
    try:
        return resp.read()
    finally:
        resp.close()


def test_parse_retries() -> None:
    assert http.parse_retries("0") == 0
    assert http.parse_retries("7") == 7
    assert http.parse_retries("infinite") is None
    for bad in ("-1", "abc", "", "4294967296", "1.5"):
        with pytest.raises(ValueError, match="invalid value"):
            http.parse_retries(bad)


def test_plain_get(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA)
    assert get_all(server, "/img", 0, sleeps) == DATA
    assert sleeps == []
    # Bytes as stored: never let a server re-encode what the signature covers.
    assert server.hits("/img")[0].headers["accept-encoding"] == "identity"


def test_404_is_not_retried(
    server: Server, sleeps: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NestosError) as info:
        get_all(server, "/missing", 5, sleeps)
    url = server.url("/missing")
    assert chain(info.value) == [f"fetching '{url}'", "HTTP 404 Not Found"]
    assert len(server.hits("/missing")) == 1
    assert sleeps == []


def test_503_twice_then_ok(
    server: Server, sleeps: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/img", DATA, fail_times=2)
    assert get_all(server, "/img", 2, sleeps) == DATA
    assert sleeps == [1.0 * http._delay_scale(), 2.0 * http._delay_scale()]
    err = capsys.readouterr().err
    url = server.url("/img")
    assert (
        f"Error fetching '{url}': HTTP 503 Service Unavailable\nSleeping 1s and retrying...\n"
        f"Error fetching '{url}': HTTP 503 Service Unavailable\nSleeping 2s and retrying...\n"
    ) in err


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
def test_retried_statuses(server: Server, sleeps: list[float], status: int) -> None:
    server.add("/img", DATA, fail_times=1, fail_status=status)
    assert get_all(server, "/img", 1, sleeps) == DATA


def test_retries_exhausted(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, fail_times=3)
    with pytest.raises(NestosError) as info:
        get_all(server, "/img", 2, sleeps)
    assert chain(info.value)[1] == "HTTP 503 Service Unavailable"
    assert len(server.hits("/img")) == 3


def test_backoff_doubles_and_caps(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, fail_times=12)
    assert get_all(server, "/img", None, sleeps) == DATA
    scale = http._delay_scale()
    assert [s / scale for s in sleeps] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]


def test_connection_refused_is_retried(sleeps: list[float]) -> None:
    with http_server() as srv:
        url = srv.url("/x")
    with pytest.raises(NestosError) as info:
        http.fetch(url, retries=1, sleep=fake_sleep(sleeps))
    assert chain(info.value)[0] == f"fetching '{url}'"
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "validator",
    [{"etag": '"v1"'}, {"last_modified": time.time() - 3600}, {}],
    ids=["etag", "last-modified", "none"],
)
def test_resume_after_drop(
    server: Server, sleeps: list[float], validator: dict[str, object]
) -> None:
    server.add("/img", DATA, drop_after=1_000_000, drop_times=2, **validator)
    assert get_all(server, "/img", 2, sleeps) == DATA
    hits = server.hits("/img")
    assert [h.status for h in hits] == [200, 206, 206]
    assert hits[1].headers["range"] == "bytes=1000000-"
    assert hits[2].headers["range"] == "bytes=2000000-"
    # Each break came after progress, so the backoff starts again at 1 s.
    assert [d / http._delay_scale() for d in sleeps] == [1.0, 1.0]
    if validator:
        assert "if-range" in hits[1].headers
    else:
        assert "if-range" not in hits[1].headers


def test_drop_without_budget_fails(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, drop_after=500_000, drop_times=1)
    with pytest.raises(NestosError) as info:
        get_all(server, "/img", 0, sleeps)
    assert chain(info.value)[0] == f"reading '{server.url('/img')}'"
    assert "peer closed connection" in chain(info.value)[1]


def test_resume_counts_against_the_same_budget(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, fail_times=1, drop_after=100_000, drop_times=5)
    with pytest.raises(NestosError):
        get_all(server, "/img", 3, sleeps)
    assert len(sleeps) == 3
    assert len(server.hits("/img")) == 4


def test_range_ignored_restarts_from_zero(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, drop_after=1_234_567, drop_times=1, ignore_range=True)
    assert get_all(server, "/img", 1, sleeps) == DATA
    assert [h.status for h in server.hits("/img")] == [200, 200]


def test_changed_file_during_resume_fails(server: Server, sleeps: list[float]) -> None:
    entry = server.add("/img", DATA, drop_after=1_000_000, drop_times=1, etag='"v1"')
    resp = http.fetch(server.url("/img"), retries=2, sleep=fake_sleep(sleeps))
    try:
        entry.etag = '"v2"'  # the If-Range no longer matches: server sends the new file
        with pytest.raises(NestosError) as info:
            resp.read()
    finally:
        resp.close()
    assert "changed on the server" in chain(info.value)[1]


def test_close_delimited_body(server: Server, sleeps: list[float]) -> None:
    server.add("/img", DATA, content_length=False)
    resp = http.fetch(server.url("/img"), sleep=fake_sleep(sleeps))
    try:
        assert resp.length is None
        assert resp.read() == DATA
    finally:
        resp.close()


def test_redirect_final_url(server: Server, sleeps: list[float]) -> None:
    server.add("/real/image.raw.xz", DATA)
    server.add("/latest", None, redirect="/real/image.raw.xz")
    resp = http.fetch(server.url("/latest"))
    try:
        assert resp.url == server.url("/real/image.raw.xz")
        assert resp.length == len(DATA)
        assert resp.read(10) == DATA[:10]
        rest = resp.read(1 << 30)
        assert len(rest) >= (1 << 20) - 10
        assert rest == DATA[10 : 10 + len(rest)]
    finally:
        resp.close()


def test_close_early_does_not_hang(server: Server) -> None:
    server.add("/img", DATA * 8)
    resp = http.fetch(server.url("/img"))
    assert len(resp.read(100)) == 100
    resp.close()
    resp.close()


def test_fetch_bytes_limit(server: Server) -> None:
    server.add("/sig", b"x" * 2000)
    with pytest.raises(NestosError) as info:
        http.fetch_bytes(server.url("/sig"), limit=1000)
    assert "too large" in chain(info.value)[1]
    server.add("/sig2", b"x" * 2000, content_length=False)
    with pytest.raises(NestosError, match="reading"):
        http.fetch_bytes(server.url("/sig2"), limit=1000)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://[::1/x", "http://"])
def test_bad_urls_fail_at_once(url: str, sleeps: list[float]) -> None:
    with pytest.raises(NestosError) as info:
        http.fetch(url, retries=3, sleep=fake_sleep(sleeps))
    assert chain(info.value)[0] == f"fetching '{url}'"
    assert sleeps == []


def test_slow_link_hands_over_partial_batches(server: Server) -> None:
    """At a few hundred kB/s a reader must not wait for a full 1 MiB batch (install's
    progress would print once per batch, not at 1 Hz): what arrived is handed over
    every FLUSH_INTERVAL. The server's rate bounds the batches, not our timing."""
    data = os.urandom(3 << 19)  # 1.5 MiB at 512 KiB/s: ~3 s
    server.add("/slow", data, rate=512 << 10)
    resp = http.fetch(server.url("/slow"))
    try:
        blocks = []
        while block := resp.read1(1 << 22):
            blocks.append(block)
        batches = resp.batches
    finally:
        resp.close()
    assert b"".join(blocks) == data
    assert batches >= 4  # 1 MiB batches would make 2


def test_network_thread_is_stopped_and_restartable(server: Server) -> None:
    """The entry point calls stop_network() when a command ends: the loop thread is
    joined (nothing left running), and a later fetch starts a fresh one."""
    import threading

    server.add("/a", b"first")
    _, body = http.fetch_bytes(server.url("/a"))
    assert body == b"first"
    assert any(t.name == "http" for t in threading.enumerate())
    http.stop_network()
    assert not any(t.name == "http" for t in threading.enumerate())
    _, body = http.fetch_bytes(server.url("/a"))
    assert body == b"first"
    http.stop_network()
    assert not any(t.name == "http" for t in threading.enumerate())
