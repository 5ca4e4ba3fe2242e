"""HTTP for the model zoo: a client with retries, resume and the network rules.

Network rules (all enforced here, for the catalogue and downloads alike):

- Nothing connects when ``Settings.network_enabled`` is false.
- ``https`` only; plain ``http`` is refused unless ``Settings.allow_http`` is set,
  except for loopback hosts (``127.0.0.1``, ``::1``, ``localhost``), which never
  leave the machine (a local mirror, the test server).  Redirects are checked too.
- Local addresses (loopback, link-local such as ``169.254.169.254``, unspecified
  ``0.0.0.0``) are reached only when the zoo itself (its index URL) is on this
  computer or its link: a remote zoo may not send ZooDesk to the workstation's own
  services, neither by URL (sources listed in the index, redirects, package files)
  nor by a host name that resolves to such an address.  The zoo's own host is
  always allowed.
- Every request has a deadline: ``Settings.transfer_base_seconds`` plus one second
  per ``Settings.transfer_min_bytes_per_second`` bytes of its size (as announced by
  ``Content-Length``, else as received so far).  It bounds connecting, the headers
  and the body alike, so a server that trickles bytes cannot hold ZooDesk for hours.
- An answer larger than the limit for its kind is refused from its
  ``Content-Length`` header, before its body is read.
- ``Settings.proxy`` and ``Settings.ca_bundle`` configure the connection.
- Transient failures (connection errors, timeouts, HTTP 408/425/429/5xx) are retried
  with exponential backoff, a bounded number of times; an interrupted transfer
  resumes where it stopped with an HTTP ``Range`` request.  Other errors are
  reported at once; every message names the URL.

Long tasks (downloads, catalogue refreshes, conversions) are plain generators of
:class:`Progress` events; :func:`run_with_progress` runs one to its end with a
progress bar for the command line.  Transfers report their bytes as they arrive.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from httpx._utils import get_environment_proxies

from zoodesk import __version__
from zoodesk.errors import CancelledError, ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.models._netguard import (
    DeadlineError,
    LocalAddressError,
    RequestGuard,
    is_local_host,
    is_loopback_host,
)
from zoodesk.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")
CancelCheck = Callable[[], bool]

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(ZooDeskError):
    """Something could not be fetched; the message names the URL and the reason."""


class NetworkDisabledError(DownloadError):
    """The settings forbid any network access."""


class NoConnectionError(DownloadError):
    """No connection to the server could be made (offline, refused or unreachable)."""


@dataclass(frozen=True)
class NetworkOptions:
    """Timeouts, retries and limits of network access.

    Attributes
    ----------
    timeout
        Seconds to wait for a connection or for the next bytes of an answer (the
        settings' deadline bounds the whole request besides).
    attempts
        How many times a request is tried in all (transient errors only).
    backoff
        Delay before the first retry; it doubles with each further retry ...
    backoff_max
        ... up to this many seconds.
    chunk_size
        Bytes between two progress events of a transfer (one is also sent every
        half second while bytes arrive).
    max_document_bytes
        Largest index or description accepted.
    max_file_bytes
        Largest single package file accepted.
    """

    timeout: float = 30.0
    attempts: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0
    chunk_size: int = 256 * 1024
    max_document_bytes: int = 64 * 1024**2
    max_file_bytes: int = 16 * 1024**3

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.backoff * 2 ** (retry - 1), self.backoff_max))


@dataclass(frozen=True)
class Progress(Generic[T]):
    """One step of a long-running fetch, for a progress bar.

    Attributes
    ----------
    stage
        ``"index"``, ``"description"``, ``"file"``, ``"install"`` or ``"done"``.
    message
        A readable line about the step.
    file
        The file being transferred, when there is one.
    done, total
        Progress of the current step: bytes of the file (``unit == "bytes"``) or items
        (``unit == "items"``); ``total`` is None when unknown.
    files_done, files_total
        Files (or descriptions) finished so far, out of how many.
    result
        Set on the last event only: what the task produced.
    """

    stage: str
    message: str
    file: str | None = None
    done: int = 0
    total: int | None = None
    unit: str = "bytes"
    files_done: int = 0
    files_total: int = 0
    result: T | None = None


def never_cancelled() -> bool:
    return False


def local_allowed(host: str, zoo: str) -> bool:
    """Whether a request to ``host`` may reach a local address, given the zoo's URL.

    Only when the zoo is itself local, or ``host`` is the zoo's own host.
    """
    zoo_host = (urlsplit(zoo).hostname or "").lower()
    return is_local_host(zoo_host) or host.strip("[]").lower() == zoo_host


def check_url(url: str, settings: Settings, *, zoo: str | None = None) -> None:
    """Refuse URLs ZooDesk may not fetch (see the module docstring).

    Parameters
    ----------
    url
        What is about to be fetched.
    settings
        The http policy; its ``index_url`` is the zoo unless ``zoo`` is given.
    zoo
        The index URL of the zoo this request works for.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise DownloadError(f"{url}: refused: only https URLs can be fetched")
    host = parts.hostname or ""
    zoo = zoo or settings.index_url
    if is_local_host(host) and not local_allowed(host, zoo):
        raise DownloadError(
            f"{url}: refused: it points to a local address ({host}) but the zoo {zoo} "
            "is not on this computer"
        )
    if parts.scheme == "http" and not (settings.allow_http or is_loopback_host(host)):
        raise DownloadError(
            f"{url}: refused plain http (unencrypted); use https, or set allow_http "
            "in the settings if this server offers nothing else"
        )


def _sleep(seconds: float, cancel: CancelCheck) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if cancel():
            raise CancelledError("download cancelled")
        time.sleep(min(left, 0.05))


class _TransientError(Exception):
    """A failure worth retrying; ``message`` is what the user sees if retries run out."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, no_connection: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.no_connection = no_connection


class _Deadline:
    """The time one request may take: a base, plus time for its size.

    The size is what the answer announces, or what has arrived so far when it
    announces nothing: then the transfer must keep up the minimum rate on average.
    """

    def __init__(self, settings: Settings) -> None:
        self.start = time.monotonic()
        self.base = settings.transfer_base_seconds
        self.rate = settings.transfer_min_bytes_per_second
        self.size = 0

    def allow(self, size: int) -> None:
        """Give the request time for ``size`` bytes (never less than before)."""
        self.size = max(self.size, size)

    @property
    def seconds(self) -> float:
        return self.base + self.size / self.rate

    @property
    def at(self) -> float:
        return self.start + self.seconds


class _Pacer:
    """Says when a transfer's next progress event is due: every ``step`` bytes, and
    every half second while bytes arrive."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.done = 0
        self.time = time.monotonic()

    def due(self, done: int) -> bool:
        now = time.monotonic()
        if done - self.done >= self.step or now - self.time >= 0.5:
            self.done, self.time = done, now
            return True
        return False


class HttpClient:
    """An ``httpx`` client following ZooDesk's network rules.

    Parameters
    ----------
    settings
        Network switch, proxy, CA bundle, the http policy and the deadlines.
    options
        Timeouts, retries and limits.
    zoo
        The index URL of the zoo the requests work for (default: the settings'); it
        decides whether local addresses may be reached.

    Raises
    ------
    NetworkDisabledError
        When the settings turn the network off: no connection is ever made.
    """

    def __init__(
        self, settings: Settings, options: NetworkOptions | None = None, *, zoo: str | None = None
    ) -> None:
        if not settings.network_enabled:
            raise NetworkDisabledError(
                "network access is turned off in the settings (network_enabled is false): "
                "nothing was fetched"
            )
        self.settings = settings
        self.options = options or NetworkOptions()
        self.zoo = zoo or settings.index_url
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle:
            try:
                verify = ssl.create_default_context(
                    cafile=str(Path(settings.ca_bundle).expanduser())
                )
            except (OSError, ssl.SSLError) as exc:
                raise DownloadError(
                    f"{settings.ca_bundle}: cannot use this CA bundle from the settings ({exc})"
                ) from exc
        zoo_url = self.zoo
        self._guard = RequestGuard(lambda host: not local_allowed(host, zoo_url))
        # The proxy of the settings, else those of the environment (as httpx would
        # pick them), each through a guarded transport.
        proxies = {"all://": settings.proxy} if settings.proxy else get_environment_proxies()
        mounts: dict[str, httpx.BaseTransport | None] = {
            pattern: self._guard.transport(verify=verify, proxy=proxy) if proxy else None
            for pattern, proxy in proxies.items()
        }
        self._client = httpx.Client(
            transport=self._guard.transport(verify=verify, proxy=None),
            mounts=mounts,
            timeout=httpx.Timeout(self.options.timeout),
            follow_redirects=True,
            # Byte counts and Range offsets must refer to the file itself, not to a
            # compressed transfer of it.
            headers={"User-Agent": f"zoodesk/{__version__}", "Accept-Encoding": "identity"},
            event_hooks={"request": [self._check_request]},
        )

    def _check_request(self, request: httpx.Request) -> None:
        # Runs for redirects as well: an https URL must not lead to plain http, nor a
        # remote zoo to a local address.
        check_url(str(request.url), self.settings, zoo=self.zoo)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- error handling

    def _status_failure(self, url: str, response: httpx.Response) -> Exception:
        text = f"GET {url}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
        if response.status_code in _TRANSIENT_STATUS:
            retry_after = response.headers.get("Retry-After", "")
            return _TransientError(text, float(retry_after) if retry_after.isdigit() else None)
        return DownloadError(text)

    def _transport_failure(self, url: str, exc: httpx.TransportError) -> _TransientError:
        if isinstance(exc, httpx.TimeoutException):
            wait = f"{self.options.timeout:g} s"
            return _TransientError(
                f"GET {url}: no answer within {wait} (timed out)",
                no_connection=isinstance(exc, httpx.ConnectTimeout),
            )
        if isinstance(exc, httpx.ConnectError):
            return _TransientError(f"GET {url}: cannot connect ({exc})", no_connection=True)
        return _TransientError(f"GET {url}: connection lost ({exc or type(exc).__name__})")

    def _after_failure(
        self,
        n: int,
        url: str,
        exc: httpx.RequestError | _TransientError,
        cancel: CancelCheck,
    ) -> None:
        """After attempt ``n`` failed: wait to retry, or raise when retrying cannot help.

        Transport failures and transient statuses are retried; any other request
        failure (a redirect loop, say) is one line naming the URL.
        """
        if isinstance(exc, _TransientError):
            self._retry_delay(n, exc, cancel)
        elif isinstance(exc, httpx.TransportError):
            self._retry_delay(n, self._transport_failure(url, exc), cancel)
        else:
            raise _request_failure(url, exc) from exc

    def _retry_delay(self, n: int, failure: _TransientError, cancel: CancelCheck) -> None:
        """Wait before retry ``n`` or, when the attempts are used up, give up."""
        if n >= max(1, self.options.attempts):
            more = f" (gave up after {n} attempts)" if n > 1 else ""
            error = NoConnectionError if failure.no_connection else DownloadError
            raise error(failure.message + more) from None
        delay = self.options.delay(n)
        if failure.retry_after is not None:
            delay = min(max(delay, failure.retry_after), self.options.backoff_max)
        _sleep(delay, cancel)

    def _refused_local(self, url: str, exc: LocalAddressError) -> DownloadError:
        return DownloadError(
            f"GET {url}: refused: {exc.host} resolves to a local address ({exc.address}) "
            f"but the zoo {self.zoo} is not on this computer"
        )

    def _too_slow(
        self, url: str, deadline: _Deadline, done: int, total: int | None
    ) -> DownloadError:
        got = f"{done:,} of {total:,} bytes" if total is not None else f"{done:,} bytes"
        return DownloadError(
            f"GET {url}: too slow: not complete within its deadline of "
            f"{_seconds(deadline.seconds)} ({got} received); the settings "
            "transfer_base_seconds and transfer_min_bytes_per_second set the deadline"
        )

    # ---- requests

    def get_bytes(
        self, url: str, *, max_bytes: int | None = None, cancel: CancelCheck | None = None
    ) -> bytes:
        """GET a small document (index, description), retrying transient failures."""
        events = self.get_document(url, event=_no_event, max_bytes=max_bytes, cancel=cancel)
        while True:
            try:
                next(events)
            except StopIteration as stop:
                return bytes(stop.value)

    def get_document(
        self,
        url: str,
        *,
        event: Callable[[int, int | None], Progress[Any]],
        max_bytes: int | None = None,
        cancel: CancelCheck | None = None,
    ) -> Generator[Progress[Any], None, bytes]:
        """GET a small document (index, description), yielding progress as it arrives.

        Yields the events ``event(done, total)`` builds; returns the document.
        Transient failures are retried.  A document larger than ``max_bytes``
        (default: ``options.max_document_bytes``) is refused, from its
        ``Content-Length`` when it announces one.
        """
        check_url(url, self.settings, zoo=self.zoo)
        limit = max_bytes or self.options.max_document_bytes
        cancel = cancel or never_cancelled
        n = 0
        while True:
            n += 1
            if cancel():
                raise CancelledError("download cancelled")
            try:
                return (yield from self._document_once(url, limit, event, cancel))
            except (httpx.RequestError, _TransientError) as exc:
                self._after_failure(n, url, exc, cancel)

    def _document_once(
        self,
        url: str,
        limit: int,
        event: Callable[[int, int | None], Progress[Any]],
        cancel: CancelCheck,
    ) -> Generator[Progress[Any], None, bytes]:
        deadline = _Deadline(self.settings)
        buffer = bytearray()
        total: int | None = None
        try:
            with self._guard.deadline(deadline), self._client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise self._status_failure(url, response)
                total = _content_length(response)
                if total is not None and total > limit:
                    raise DownloadError(
                        f"GET {url}: refused: the server announces {_size(total)}, more "
                        f"than the {_size(limit)} accepted for an index or description"
                    )
                deadline.allow(total or 0)
                pacer = _Pacer(self.options.chunk_size)
                yield event(0, total)
                for chunk in response.iter_bytes():
                    buffer += chunk
                    if len(buffer) > limit:
                        raise DownloadError(
                            f"GET {url}: refused: larger than the {_size(limit)} accepted "
                            "for an index or description"
                        )
                    deadline.allow(len(buffer))
                    if cancel():
                        raise CancelledError("download cancelled")
                    if pacer.due(len(buffer)):
                        yield event(len(buffer), total)
        except DeadlineError:
            raise self._too_slow(url, deadline, len(buffer), total) from None
        except LocalAddressError as exc:
            raise self._refused_local(url, exc) from None
        return bytes(buffer)

    def stream_to_file(
        self,
        url: str,
        part: Path,
        *,
        event: Callable[[int, int | None], Progress[Any]],
        cancel: CancelCheck | None = None,
    ) -> Generator[Progress[Any], None, tuple[str, bool]]:
        """Download ``url`` into ``part``, resuming from the bytes already in it.

        Yields the events ``event(done, total)`` builds; returns the file's sha256 and
        whether any part of it came from an earlier, interrupted transfer.
        """
        check_url(url, self.settings, zoo=self.zoo)
        cancel = cancel or never_cancelled
        part.parent.mkdir(parents=True, exist_ok=True)
        resumed = False
        n = 0
        while True:
            n += 1
            if cancel():
                raise CancelledError("download cancelled")
            try:
                resumed = (yield from self._stream_once(url, part, event, cancel)) or resumed
                return sha256_file(part), resumed
            except (httpx.RequestError, _TransientError) as exc:
                self._after_failure(n, url, exc, cancel)

    def _stream_once(
        self,
        url: str,
        part: Path,
        event: Callable[[int, int | None], Progress[Any]],
        cancel: CancelCheck,
    ) -> Generator[Progress[Any], None, bool]:
        """One GET of ``url`` into ``part`` (resuming); returns True if it resumed."""
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        deadline = _Deadline(self.settings)
        done = offset
        total: int | None = None
        try:
            with (
                self._guard.deadline(deadline),
                self._client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 416 and offset:
                    # The partial file is not a prefix of this resource (any more).
                    part.unlink()
                    raise _TransientError(f"GET {url}: the partial download was stale")
                if response.status_code >= 400:
                    raise self._status_failure(url, response)
                if response.status_code == 206:
                    if _range_start(response) != offset:
                        part.unlink(missing_ok=True)
                        raise _TransientError(f"GET {url}: the server answered another range")
                else:
                    offset = 0  # the server sends the whole file
                length = _content_length(response)
                total = offset + length if length is not None else None
                limit = self.options.max_file_bytes
                if total is not None and total > limit:
                    raise DownloadError(
                        f"GET {url}: refused: the server announces {_size(total)}, more "
                        f"than the {_size(limit)} accepted for a package file"
                    )
                deadline.allow(length or 0)
                done = offset
                pacer = _Pacer(self.options.chunk_size)
                yield event(done, total)
                with part.open("ab" if offset else "wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                        done += len(chunk)
                        if done > (total or limit):
                            raise DownloadError(
                                f"GET {url}: refused: the server sent more bytes than announced"
                            )
                        deadline.allow(done - offset)
                        if cancel():
                            raise CancelledError("download cancelled")
                        if pacer.due(done):
                            yield event(done, total)
                yield event(done, total)
                if total is not None and done < total:
                    raise _TransientError(
                        f"GET {url}: connection lost after {done} of {total} bytes"
                    )
        except DeadlineError:
            raise self._too_slow(url, deadline, done, total) from None
        except LocalAddressError as exc:
            raise self._refused_local(url, exc) from None
        return offset > 0


def _no_event(done: int, total: int | None) -> Progress[Any]:
    return Progress("document", "", done=done, total=total)


def _content_length(response: httpx.Response) -> int | None:
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _size(n: int) -> str:
    """``"512 bytes"``, ``"64 MB"``, ``"1.5 GB"`` (1 MB = 1024² bytes, as the limits)."""
    if n < 1024**2:
        return f"{n:,} bytes"
    unit, scale = ("GB", 1024**3) if n >= 1024**3 else ("MB", 1024**2)
    return f"{n / scale:,.1f}".removesuffix(".0") + f" {unit}"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:,.0f} s"


def _range_start(response: httpx.Response) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _request_failure(url: str, exc: httpx.RequestError) -> DownloadError:
    """A failure that retrying cannot mend (a redirect loop, say), in one line."""
    if isinstance(exc, httpx.TooManyRedirects):
        return DownloadError(f"GET {url}: refused: it redirects too many times (a loop?)")
    return DownloadError(f"GET {url}: {type(exc).__name__}: {exc}")


def file_url(description_url: str, path: str) -> str:
    """The URL of a package file given by ``path`` relative to its description.

    The description URL's query (e.g. the zoo's ``?version=v0``) applies to the files
    as well.
    """
    if path.startswith(("http://", "https://")):
        return path
    parts = urlsplit(description_url)
    folder = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{folder}/{quote(path)}", parts.query, ""))


# ------------------------------------------------------------------- blocking wrappers


def _amount(event: Progress[Any]) -> str:
    if event.unit == "bytes":
        done = f"{event.done / 1e6:.1f}"
        return f"{done}/{event.total / 1e6:.1f} MB" if event.total else f"{done} MB"
    return f"{event.done}/{event.total}" if event.total else ""


def run_with_progress(
    events: Iterable[Progress[T]], *, console: Console | None = None, show: bool = True
) -> T:
    """Consume a progress generator, drawing a rich progress bar; return its result.

    Parameters
    ----------
    events
        E.g. :func:`download_model` or the catalogue refresh.
    console
        Where to draw (default: standard error).
    show
        False consumes the events silently.
    """
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    result: T | None = None
    if not show:
        for ev in events:
            result = ev.result if ev.result is not None else result
    else:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
        )
        with Bar(*columns, console=console or Console(stderr=True), transient=True) as bar:
            task = bar.add_task("", total=None, amount="")
            for ev in events:
                bar.update(
                    task,
                    description=ev.message,
                    completed=ev.done,
                    total=ev.total,
                    amount=_amount(ev),
                )
                result = ev.result if ev.result is not None else result
    if result is None:
        raise ZooDeskError("the task ended without a result")
    return result
