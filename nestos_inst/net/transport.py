"""Which connection carries a request: a proxy, the plain-HTTP fast path, or TLS.

One httpx transport (Router) decides per request, from the environment as curl and
upstream's client read it (HTTP_PROXY/http_proxy, HTTPS_PROXY/https_proxy,
ALL_PROXY/all_proxy, NO_PROXY/no_proxy; the standard library's rules for which
spelling wins and for NO_PROXY matching):

- a proxy applies: httpx's own transport with that proxy (plain forwarding for
  http://, CONNECT for https://);
- plain http:// without a proxy: an httpcore connection pool on PlainBackend
  (net/plain.py), whose sockets we own, so the kernel can move a body (splice);
- anything else: httpx's default transport with the system trust store.

Everything here goes through public interfaces: httpx.AsyncBaseTransport,
httpcore.AsyncConnectionPool with its `network_backend=` argument, and the public
exception classes of both. The plain-HTTP fast path can be switched off
(fastpaths.enabled("plain-http")); the default transport then serves http:// too,
with the same results.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx

from .. import fastpaths
from ..errors import NestosError, describe
from ..io.files import CA_FILE_LIMIT, read_limited
from .messages import reason
from .plain import PlainBackend

# httpcore's exception -> httpx's exception of the same meaning (both public).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError:
        raise
    except Exception as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc), request=request) from exc
        raise


class _Body(httpx.AsyncByteStream):
    """A pool response's body with httpcore's errors turned into httpx's."""

    def __init__(self, stream: httpcore.Response, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._stream.aiter_stream():
                yield chunk

    async def aclose(self) -> None:
        with _mapped(self._request):
            await self._stream.aclose()


class PlainTransport(httpx.AsyncBaseTransport):
    """http:// over an httpcore pool on PlainBackend (sockets we own outright)."""

    def __init__(self) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=PlainBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped(request):
            resp = await self._pool.handle_async_request(req)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_Body(resp, request),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def trust_context() -> ssl.SSLContext:
    """The system's trust store (what upstream's OpenSSL uses, so a fleet's own CA
    added with update-ca-trust works); SSL_CERT_FILE / SSL_CERT_DIR replace it;
    certifi's bundle only where the system has none."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    try:
        # Not create_default_context(): OpenSSL would read SSL_CERT_FILE itself, whole,
        # whatever it is (a FIFO, /dev/zero). We read it, bounded, and hand over the text.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile:
            # Explicit, so that a broken file is an error rather than an empty store.
            pem = read_limited(cafile, CA_FILE_LIMIT, message=f"reading {cafile}")
            ctx.load_verify_locations(cadata=pem.decode("ascii", errors="replace"))
        if capath:
            ctx.load_verify_locations(capath=capath)
        if not (cafile or capath):
            ctx.load_default_certs()
        if not (cafile or capath) and ctx.cert_store_stats()["x509_ca"] == 0:
            with contextlib.suppress(ImportError):
                import certifi

                ctx.load_verify_locations(cafile=certifi.where())
    except (ssl.SSLError, OSError, ValueError, NestosError) as exc:
        where = cafile or capath
        what = "loading trusted certificates" + (f" from {where}" if where else "")
        cause = exc if isinstance(exc, NestosError) else NestosError(describe(exc))
        raise NestosError(what) from cause
    return ctx


def proxy_for(url: httpx.URL, proxies: dict[str, str] | None = None) -> str | None:
    """The proxy URL the environment names for `url`, or None (direct).

    `proxies` is urllib.request.getproxies_environment()'s answer (lower-case spelling
    first; HTTP_PROXY ignored in CGI scripts), keyed by scheme, "all" and "no".
    """
    env = urllib.request.getproxies_environment() if proxies is None else proxies
    chosen = env.get(url.scheme) or env.get("all")
    if not chosen or bypassed(url.host, url.port, env.get("no", "")):
        return None
    if "://" not in chosen:
        chosen = "http://" + chosen  # `host:port`, as curl accepts it
    return chosen


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, host names matching themselves and their
    subdomains (a leading dot optional), IP addresses and CIDR blocks, each with an
    optional `:port`."""
    host = host.strip("[]").lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want_port: int | None = None
        name, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit() and "]" not in tail and name.count(":") == 0:
            entry, want_port = name, int(tail)
        if want_port is not None and port is not None and want_port != port:
            continue
        entry = entry.strip("[]").rstrip(".")
        if "/" in entry:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


class Router(httpx.AsyncBaseTransport):
    """Routes each request to a proxy, the plain-HTTP pool, or the TLS transport.

    Transports are built on first use: loading the trust store is start-up work
    that a plain-HTTP download never needs. The environment is read once,
    when the router is made.
    """

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._fast = fastpaths.enabled("plain-http")
        self._plain: PlainTransport | None = None
        self._direct: httpx.AsyncHTTPTransport | None = None
        self._via: dict[str, httpx.AsyncHTTPTransport] = {}

    def _pick(self, url: httpx.URL) -> tuple[httpx.AsyncBaseTransport, str | None]:
        proxy = proxy_for(url, self._proxies)
        if proxy is not None:
            if proxy not in self._via:
                try:
                    self._via[proxy] = httpx.AsyncHTTPTransport(
                        verify=trust_context(), proxy=proxy, trust_env=False
                    )
                except (ValueError, ImportError, httpx.HTTPError) as exc:
                    raise NestosError(f"using proxy '{proxy}'") from NestosError(describe(exc))
            return self._via[proxy], proxy
        if url.scheme == "http" and self._fast:
            if self._plain is None:
                self._plain = PlainTransport()
            return self._plain, None
        if self._direct is None:
            self._direct = httpx.AsyncHTTPTransport(verify=trust_context(), trust_env=False)
        return self._direct, None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport, proxy = self._pick(request.url)
        if proxy is None:
            return await transport.handle_async_request(request)
        try:
            return await transport.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            # The connection that failed is the one to the proxy: say so, with its
            # address, not the target's.
            why = reason(exc) or describe(exc)
            raise httpx.ProxyError(
                f"could not connect to proxy {proxy}: {why}", request=request
            ) from exc

    async def aclose(self) -> None:
        transports: list[httpx.AsyncBaseTransport] = [*self._via.values()]
        transports += [t for t in (self._plain, self._direct) if t is not None]
        for transport in transports:
            await transport.aclose()
