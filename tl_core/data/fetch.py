"""Fetching one URL a user gave the lab, safely: `SafeFetcher`.

It is the only way the lab fetches a URL a user gave it (or a search result):

- http and https only; a malformed URL is a `FetchError` naming it;
- the host name is resolved once, every address it resolves to must be public (not
  private, loopback, link-local, multicast, reserved or unspecified; an IPv6 address that
  embeds an IPv4 one is judged by that IPv4 address), and the connection goes to that
  checked address (`PinnedAdapter`) while the Host header, TLS SNI and the certificate
  check keep the name, so a second DNS answer cannot redirect it (rebinding);
- redirects are followed by hand, each hop checked the same way;
- bytes are counted while streaming and the download stops at the limit;
- one deadline (`total_timeout`) holds for the whole of one URL: connecting, headers,
  body, redirects and retries. A watchdog shuts the socket down when it passes, so a
  server that trickles one byte a second (even in its headers) cannot hold a worker;
- transient failures (timeouts, connection errors, 429 and 5xx) are retried with
  exponential backoff; HTTP proxies from the environment are not used, since a proxy would
  resolve the name itself.

Loopback and private addresses are allowed only with `FetchPolicy(allow_private=True)` or
`TL_LAB_ALLOW_PRIVATE_URLS=1`, meant for tests against a local server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tl_core import __version__
from tl_core.errors import LabError

USER_AGENT = (
    f"TransferLearningLab/{__version__} (image data set builder for teaching transfer "
    f"learning; set TL_LAB_CONTACT to your e-mail or URL) python-requests/{requests.__version__}"
)


def user_agent() -> str:
    """The descriptive User-Agent Wikimedia's policy asks for, with a contact if set."""
    contact = os.environ.get("TL_LAB_CONTACT", "").strip()
    return USER_AGENT.replace("set TL_LAB_CONTACT to your e-mail or URL", contact or "no contact")


def allow_private_from_env() -> bool:
    return os.environ.get("TL_LAB_ALLOW_PRIVATE_URLS") == "1"


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False
    # Non-public addresses allowed anyway (tests: the local server's 127.0.0.1 only).
    allowed_addresses: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 120.0  # for one file, however slowly it trickles in
    max_bytes: int = 20 * 1024 * 1024
    retries: int = 2
    backoff: float = 0.5  # seconds, doubled after each retry
    max_redirects: int = 5
    workers: int = 8

    def __post_init__(self) -> None:
        # NaN passes every `<= 0` test and `inf` never times out: refuse both here, once.
        for name in ("connect_timeout", "read_timeout", "total_timeout", "max_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise LabError(f"{name} must be a positive finite number, got {value!r}")


def default_policy(**overrides) -> FetchPolicy:
    """The default policy, with loopback allowed when `TL_LAB_ALLOW_PRIVATE_URLS=1`."""
    overrides.setdefault("allow_private", allow_private_from_env())
    return FetchPolicy(**overrides)


class FetchError(Exception):
    """A URL that could not be fetched; the message is the reason for the report."""

    def __init__(self, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.retry = retry


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped (::ffff:a.b.c.d), compatible
    (::a.b.c.d), NAT64 (64:ff9b::/96, and 64:ff9b:1::/48 in both its RFC 6052 /48 and /96
    layouts), 6to4 (2002::/16) and Teredo (2001::/32: server and de-obfuscated client)."""
    v4 = ipaddress.IPv4Address
    value = int(addr)
    found: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped:
        found.append(addr.ipv4_mapped)
    if addr in _IPV4_COMPATIBLE and value > 1:
        found.append(v4(value & 0xFFFFFFFF))
    if addr in _NAT64:
        found.append(v4(value & 0xFFFFFFFF))
    if addr in _NAT64_LOCAL:
        high, low = (value >> 64) & 0xFFFF, (value >> 40) & 0xFFFF
        found += [v4((high << 16) | low), v4(value & 0xFFFFFFFF)]
    if addr.sixtofour:
        found.append(addr.sixtofour)
    if addr.teredo:
        server, client = addr.teredo
        found += [client, server]
    return found


def _ipv4_problem(addr: ipaddress.IPv4Address, allow_private: bool) -> str | None:
    if addr.is_unspecified:
        return f"{addr} is an unspecified address"
    if addr.is_multicast:
        return f"{addr} is a multicast address"
    if allow_private:
        return None
    for kind, flag in (
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("reserved", addr.is_reserved),
        ("private", addr.is_private),
    ):
        if flag:
            return f"{addr} is a {kind} address"
    if not addr.is_global:
        return f"{addr} is not a public address"
    return None


def address_problem(ip: str, *, allow_private: bool, allowed: tuple[str, ...] = ()) -> str | None:
    """Why a connection to `ip` is refused, or None.

    An IPv6 address that embeds IPv4 addresses (see `embedded_ipv4`) is judged by them:
    NAT64, 6to4 or Teredo around 127.0.0.1 is a way to loopback, whatever the prefix.
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if str(addr) in allowed:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        inner = embedded_ipv4(addr)
        for v4 in inner:
            problem = _ipv4_problem(v4, allow_private)
            if problem:
                return problem if addr.ipv4_mapped else f"{addr} embeds {problem}"
        if inner:
            return None
    return _ipv4_problem(addr, allow_private)  # the same checks read for IPv6


def split_url(url: str):
    """`urlsplit`, with a malformed URL (`http://[::1`, `http://[127.0.0.1]/`) as a
    `FetchError` that names it, instead of a `ValueError` that ends the whole list."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises for a bad one
    except ValueError as exc:
        raise FetchError(f"malformed URL ({exc})") from None
    return parts


def resolve_checked(url: str, *, allow_private: bool, allowed: tuple[str, ...] = ()) -> str:
    """Check the URL's scheme and every address its host resolves to; return one to use."""
    parts = split_url(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"unsupported scheme {parts.scheme or '(none)'!r}: only http and https")
    host = parts.hostname
    if not host:
        raise FetchError("no host in URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for ip in addresses:
        problem = address_problem(ip, allow_private=allow_private, allowed=allowed)
        if problem:
            via = "" if host.strip("[]") == ip else f"{host} resolves to {ip}; "
            raise FetchError(f"refused: {via}{problem}")
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    return addresses[0]


class _Deadline:
    """Shuts down every socket of one download when its deadline passes.

    A per-read timeout cannot bound a server that sends one byte a second: each read
    succeeds. This timer does; the reading thread then sees a closed connection, and
    `fired` tells it why.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _WATCH.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _WATCH.deadline = None

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_WATCH = threading.local()


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_WATCH, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Hands each socket of an urllib3 connection to the current thread's `_Deadline`."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)  # before any TLS handshake or header: both can trickle
        return sock

    def request(self, *args, **kwargs) -> None:
        _watch(self.sock)  # a kept-alive connection made under an earlier deadline
        return super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """Connects to the address checked for this request, not to a fresh DNS answer.

    The pin is per thread (`pinned(ip)`), so one adapter serves a pool of workers. For
    https the pool keeps the host name for SNI and certificate verification.
    """

    def __init__(self, **kwargs) -> None:
        self._local = threading.local()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def send(self, request, **kwargs):
        ip = getattr(self._local, "ip", None)
        if ip is None:
            raise FetchError("internal error: request sent without a checked address")
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        return super().send(request, **kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = host_params["host"]
        host_params["host"] = self._local.ip
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


@dataclass
class Fetched:
    url: str  # the URL asked for
    final_url: str  # after redirects
    data: bytes
    content_type: str


class SafeFetcher:
    """Fetches URLs under a `FetchPolicy`; safe to share between threads."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or default_policy()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies: they would resolve names themselves
        self.session.headers["User-Agent"] = user_agent()
        self.adapter = PinnedAdapter(
            pool_connections=self.policy.workers, pool_maxsize=self.policy.workers
        )
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)

    def get(self, url: str, *, params: dict | None = None) -> Fetched:
        """Fetch a URL with retries, all within `policy.total_timeout` seconds; raises
        `FetchError` with the reason."""
        deadline = time.monotonic() + self.policy.total_timeout
        attempt = 0
        while True:
            try:
                return self._get_once(url, params, deadline)
            except FetchError as exc:
                pause = self.policy.backoff * 2**attempt
                if (
                    not exc.retry
                    or attempt >= self.policy.retries
                    or time.monotonic() + pause >= deadline
                ):
                    raise
                time.sleep(pause)
                attempt += 1

    def _too_slow(self) -> FetchError:
        return FetchError(f"too slow: not finished within {self.policy.total_timeout:g}s")

    def get_json(self, url: str, *, params: dict | None = None) -> object:
        fetched = self.get(url, params=params)
        try:
            return json.loads(fetched.data)
        except ValueError as exc:
            raise FetchError(f"not JSON ({exc})") from None

    def _get_once(self, url: str, params: dict | None, deadline: float) -> Fetched:
        p = self.policy
        split_url(url)
        try:
            current = requests.Request("GET", url, params=params).prepare().url
        except (requests.RequestException, ValueError) as exc:
            raise FetchError(f"malformed URL ({_short(exc)})") from None
        for _hop in range(p.max_redirects + 1):
            ip = resolve_checked(
                current, allow_private=p.allow_private, allowed=p.allowed_addresses
            )
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._too_slow()
            with _Deadline(left) as watchdog:
                try:
                    resp = self._send(current, ip, min(p.connect_timeout, left))
                    with resp:
                        if resp.is_redirect:
                            current = self._next_hop(current, resp)
                            continue
                        if resp.status_code >= 400:
                            retry = resp.status_code == 429 or resp.status_code >= 500
                            raise FetchError(
                                f"HTTP {resp.status_code} {resp.reason or ''}".strip(),
                                retry=retry,
                            )
                        data = self._read_limited(resp)
                except FetchError:
                    if watchdog.fired:
                        raise self._too_slow() from None
                    raise
                if watchdog.fired:  # the body may end early (no Content-Length)
                    raise self._too_slow()
                return Fetched(url, current, data, resp.headers.get("Content-Type", ""))
        raise FetchError(f"more than {p.max_redirects} redirects")

    def _send(self, url: str, ip: str, connect_timeout: float) -> requests.Response:
        p = self.policy
        prepared = self.session.prepare_request(requests.Request("GET", url))
        self.adapter._local.ip = ip
        try:
            return self.session.send(
                prepared,
                stream=True,
                allow_redirects=False,
                timeout=(connect_timeout, p.read_timeout),
            )
        except requests.Timeout:
            raise FetchError(f"timed out (limit {p.read_timeout:g}s)", retry=True) from None
        except requests.ConnectionError as exc:
            raise FetchError(f"connection failed ({_short(exc)})", retry=True) from None
        except requests.RequestException as exc:
            raise FetchError(f"request failed ({_short(exc)})") from None
        finally:
            self.adapter._local.ip = None

    def _next_hop(self, current: str, resp: requests.Response) -> str:
        p = self.policy
        nxt = urljoin(current, resp.headers.get("Location", ""))
        try:
            resolve_checked(nxt, allow_private=p.allow_private, allowed=p.allowed_addresses)
        except FetchError as exc:
            raise FetchError(f"redirect to {nxt} {exc}") from None
        return nxt

    def _read_limited(self, resp: requests.Response) -> bytes:
        limit = self.policy.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(f"too large: {int(declared):,} bytes (limit {limit:,})")
        buf = bytearray()
        try:
            for chunk in resp.iter_content(64 * 1024):
                buf += chunk
                if len(buf) > limit:
                    raise FetchError(f"too large: more than {limit:,} bytes (limit)")
        except requests.RequestException as exc:
            raise FetchError(f"download interrupted ({_short(exc)})", retry=True) from None
        return bytes(buf)


def _short(exc: Exception) -> str:
    text = str(exc)
    if "timed out" in text.lower():
        return "timed out"
    return text if len(text) < 160 else text[:157] + "..."
