"""Guards under the HTTP client: local addresses and the deadline of each request.

httpx reads and writes through an httpcore *network backend*; wrapping it puts every
connect, read and write of a request under two rules that cannot be enforced from
above the socket:

- a request may not outlast its deadline, headers included: a per-read timeout alone
  lets a server that sends one byte now and then hold a request for hours;
- a direct connection may not reach a local address (loopback, link-local,
  unspecified) unless the caller allows it, whatever name led there: a host name can
  resolve to ``127.0.0.1``.

:mod:`zoodesk.models.http` owns the policy (which hosts may be local, how long a
request may take); this module only applies it and raises :class:`DeadlineError`
or :class:`LocalAddressError`, which pass through httpx unchanged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

_TIMEOUTS = (httpcore.ConnectTimeout, httpcore.ReadTimeout, httpcore.WriteTimeout)


class DeadlineError(Exception):
    """The request ran past its deadline."""


class LocalAddressError(Exception):
    """A connection reached a local address it may not use."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} is the local address {address}")
        self.host = host
        self.address = address


class HasDeadline(Protocol):
    """What the guard needs of a request's time limit."""

    @property
    def at(self) -> float:
        """The ``time.monotonic()`` by which the request must be over."""
        ...


# ------------------------------------------------------------------ local addresses


def host_address(host: str) -> IPAddress | None:
    """The IP address that ``host`` spells, or None for a name.

    Besides the usual forms, the shorthand that the system resolver reads as IPv4
    (``127.1``, ``0x7f.0.0.1``, ``2130706433``) counts as the address it stands for.
    """
    name = host.strip("[]").split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9][0-9a-fA-FxX.]*", name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def is_local_ip(ip: IPAddress) -> bool:
    """True for loopback, link-local and unspecified addresses (IPv4-mapped too)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def is_local_host(host: str) -> bool:
    """True when ``host`` names this computer or its link: ``localhost`` (and
    ``*.localhost``) or a local address (:func:`is_local_ip`)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = host_address(name)
    return ip is not None and is_local_ip(ip)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` is ``localhost`` or a loopback address."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = host_address(name)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


# ------------------------------------------------------------------------ the guard


class _Current(threading.local):
    # httpx's synchronous client runs each request entirely in the calling thread,
    # so the thread identifies the request a read belongs to.
    deadline: HasDeadline | None = None


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend applying the deadline and the local-address rule.

    Parameters
    ----------
    inner
        The backend that really connects.
    refuse_local
        Given the host name being connected to, True when reaching a local address
        through it is refused; None checks nothing (a proxy's connections: the proxy
        is the user's own choice, and it resolves the names).
    """

    def __init__(
        self,
        inner: httpcore.NetworkBackend,
        refuse_local: Callable[[str], bool] | None,
        current: _Current,
    ) -> None:
        self._inner = inner
        self._refuse_local = refuse_local
        self._current = current

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _limited(
            self._current,
            timeout,
            lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options),
        )
        if self._refuse_local is not None and self._refuse_local(host):
            peer = stream.get_extra_info("server_addr")
            ip = host_address(str(peer[0])) if isinstance(peer, tuple) and peer else None
            if ip is not None and is_local_ip(ip):
                stream.close()
                raise LocalAddressError(host, str(ip))
        return _GuardedStream(stream, self._current)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _limited(
            self._current,
            timeout,
            lambda t: self._inner.connect_unix_socket(path, t, socket_options),
        )
        return _GuardedStream(stream, self._current)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, current: _Current) -> None:
        self._inner = inner
        self._current = current

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _limited(self._current, timeout, lambda t: self._inner.read(max_bytes, t))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _limited(self._current, timeout, lambda t: self._inner.write(buffer, t))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = _limited(
            self._current,
            timeout,
            lambda t: self._inner.start_tls(ssl_context, server_hostname, t),
        )
        return _GuardedStream(tls, self._current)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _limited(current: _Current, timeout: float | None, call: Callable[[float | None], T]) -> T:
    """Run ``call`` with ``timeout`` shortened to what is left of the deadline."""
    deadline = current.deadline
    if deadline is None:
        return call(timeout)
    left = deadline.at - time.monotonic()
    if left <= 0:
        raise DeadlineError
    cut = timeout is None or left < timeout
    try:
        return call(left if cut else timeout)
    except _TIMEOUTS:
        if cut:
            raise DeadlineError from None
        raise


class RequestGuard:
    """The guards of one HTTP client: its transports and the deadline of each request.

    Parameters
    ----------
    refuse_local
        Given a host name, True when a direct connection through it may not reach
        a local address.
    """

    def __init__(self, refuse_local: Callable[[str], bool]) -> None:
        self._refuse_local = refuse_local
        self._current = _Current()

    def transport(self, *, verify: Any, proxy: str | None) -> httpx.HTTPTransport:
        """An httpx transport (through ``proxy`` when given) whose sockets are guarded.

        Connections through a proxy are not checked for local addresses: they go to
        the proxy, and the proxy resolves the names.
        """
        transport = httpx.HTTPTransport(verify=verify, proxy=proxy)
        # httpx does not take a network backend yet (encode/httpx discussion #3180,
        # pull request #3749), but its connection pool uses the one it holds, and
        # httpcore documents the backend interface.
        pool = transport._pool
        if not isinstance(getattr(pool, "_network_backend", None), httpcore.NetworkBackend):
            raise RuntimeError("this httpx version does not allow a guarded network backend")
        pool._network_backend = GuardedBackend(
            pool._network_backend, None if proxy else self._refuse_local, self._current
        )
        return transport

    @contextlib.contextmanager
    def deadline(self, deadline: HasDeadline) -> Iterator[None]:
        """Apply ``deadline`` to every connect, read and write of this thread's request."""
        previous = self._current.deadline
        self._current.deadline = deadline
        try:
            yield
        finally:
            self._current.deadline = previous
