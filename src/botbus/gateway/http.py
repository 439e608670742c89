"""AiohttpRequest: python-telegram-bot's HTTP transport on aiohttp instead of httpx.

PTB's default :class:`~telegram.request.HTTPXRequest` spends much of a busy
gateway's CPU inside httpx/httpcore (pool scans, anyio streams). This class
speaks the same :class:`~telegram.request.BaseRequest` contract on one
long-lived :class:`aiohttp.ClientSession` with keep-alive connections:

>>> request = AiohttpRequest(connection_pool_size=128)     # doctest: +SKIP
>>> bot = telegram.Bot(token, request=request, get_updates_request=AiohttpRequest())

Bodies are what HTTPXRequest sends: parameters as an urlencoded form (each
value JSON-encoded the way PTB prepares it), or ``multipart/form-data`` when
files are uploaded. HTTP error statuses are returned, not raised: PTB turns
them into ``BadRequest``, ``Forbidden``, ``RetryAfter``... from the body.

Differences from HTTPXRequest: HTTP/1.1 only; ``write_timeout`` is accepted
but not enforced (aiohttp has no per-write timeout); proxies come only from
the ``proxy`` argument, never from the environment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp

# PTB types its timeout arguments with these; HTTPXRequest narrows them the same way.
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

log = logging.getLogger(__name__)

__all__ = ["AiohttpRequest"]

DEFAULT_POOL_SIZE: Final = 256  # connections; HTTPXRequest's default
DEFAULT_READ_TIMEOUT: Final = 5.0  # seconds
DEFAULT_WRITE_TIMEOUT: Final = 5.0  # seconds
DEFAULT_CONNECT_TIMEOUT: Final = 5.0  # seconds
DEFAULT_POOL_TIMEOUT: Final = 1.0  # seconds
_TIMEOUT_CACHE_SIZE: Final = 64  # distinct per-call (read, connect) pairs kept ready

_MAX_CHAIN: Final = 8  # exceptions looked at in a __cause__/__context__ chain

_FORM_HEADERS: Final = {"Content-Type": "application/x-www-form-urlencoded"}

_E = TypeVar("_E", bound=NetworkError)

# (read, connect) timeouts in seconds, None meaning "no limit"
_TimeoutKey = tuple[float | None, float | None]


class AiohttpRequest(BaseRequest):
    """A :class:`~telegram.request.BaseRequest` built on one :class:`aiohttp.ClientSession`.

    ``connection_pool_size`` caps the concurrent connections (and so the
    requests in flight); a request that finds them all busy waits up to
    ``pool_timeout`` seconds, then fails with ``TimedOut`` without being sent.
    ``read_timeout`` bounds the wait for each chunk of the answer once the
    request is sent, ``connect_timeout`` the TCP (and TLS) connect. None
    means no limit. Every timeout can be overridden per call, as PTB does for
    long polls. ``write_timeout`` exists for parity with HTTPXRequest only.
    """

    __slots__ = (
        "_connect_timeout",
        "_default_timeout",
        "_limit",
        "_pool_size",
        "_pool_timeout",
        "_proxy",
        "_read_timeout",
        "_session",
        "_shut_down",
        "_timeouts",
        "_write_timeout",
    )

    def __init__(
        self,
        connection_pool_size: int = DEFAULT_POOL_SIZE,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        *,
        proxy: str | None = None,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError(f"connection_pool_size must be at least 1, got {connection_pool_size}")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._proxy = proxy
        self._default_timeout = _client_timeout(read_timeout, connect_timeout)
        self._timeouts: dict[_TimeoutKey, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        # Made with the session: a Semaphore binds to the loop that first waits on it.
        self._limit: asyncio.Semaphore | None = None
        self._shut_down = False

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout in seconds (None: wait for ever)."""
        return self._read_timeout

    @property
    def connection_pool_size(self) -> int:
        """How many connections (and so requests in flight) this transport allows."""
        return self._pool_size

    async def initialize(self) -> None:
        """Open the HTTP session in the running event loop (again after :meth:`shutdown`)."""
        self._shut_down = False
        if self._session is None or self._session.closed:
            self._open()

    async def shutdown(self) -> None:
        """Close the session and its connections; calling it twice is harmless."""
        self._shut_down = True
        session, self._session = self._session, None
        if session is None or session.closed:
            log.debug("AiohttpRequest already shut down")
            return
        await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.USER_AGENT},
            timeout=self._default_timeout,
            proxy=self._proxy,
            # Reading proxy variables on every request costs CPU; `proxy` is explicit.
            trust_env=False,
        )
        self._limit = asyncio.Semaphore(self._pool_size)
        return self._session

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send one request and return ``(HTTP status, body)``; see BaseRequest.do_request.

        Raises ``TimedOut`` when a timeout expires (the pool one included) and
        ``NetworkError`` when the Bot API cannot be reached or the exchange breaks.
        ``write_timeout`` is accepted and ignored: aiohttp cannot bound a single write.
        """
        session = self._session
        if session is None or session.closed:
            if self._shut_down:
                raise RuntimeError(
                    "this AiohttpRequest was shut down; call initialize() "
                    "(or Bot.initialize()) before sending requests again"
                )
            session = self._open()
        limit = self._limit
        assert limit is not None  # set together with the session

        # A DefaultValue means "not passed": the instance's own value applies.
        if isinstance(read_timeout, DefaultValue):
            read_timeout = self._read_timeout
        if isinstance(connect_timeout, DefaultValue):
            connect_timeout = self._connect_timeout
        if isinstance(pool_timeout, DefaultValue):
            pool_timeout = self._pool_timeout
        timeout = self._timeout_for(read_timeout, connect_timeout)

        data: bytes | aiohttp.FormData | None = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if request_data.contains_files:
                data = _multipart(request_data)
            else:
                parameters = request_data.json_parameters
                if parameters:
                    data = urlencode(parameters).encode()
                    headers = _FORM_HEADERS

        # The pool wait is ours, not aiohttp's: aiohttp folds it into the connect
        # timeout, and an operator must know a request was *not* sent.
        if limit.locked():
            try:
                async with asyncio.timeout(pool_timeout):
                    await limit.acquire()
            except TimeoutError:
                raise TimedOut(
                    f"Pool timeout: all {self._pool_size} connections to the Bot API stayed "
                    f"busy for {pool_timeout} s; the request was NOT sent. Raise "
                    "connection_pool_size or pool_timeout, or send less at once."
                ) from None
        else:
            await limit.acquire()
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise _error(
                TimedOut, exc, url, f"could not connect within {connect_timeout} s"
            ) from _cause(exc, url)
        except TimeoutError as exc:  # aiohttp's SocketTimeoutError is one too
            raise _error(
                TimedOut, exc, url, f"no answer within the read timeout of {read_timeout} s"
            ) from _cause(exc, url)
        except aiohttp.ClientConnectorError as exc:
            raise _error(
                NetworkError, exc, url, "cannot connect; check TELEGRAM_API_URL and the network"
            ) from _cause(exc, url)
        except (aiohttp.ClientError, OSError) as exc:
            raise _error(NetworkError, exc, url, "the HTTP exchange failed") from _cause(exc, url)
        finally:
            limit.release()

    def _timeout_for(self, read: float | None, connect: float | None) -> aiohttp.ClientTimeout:
        """The ClientTimeout for these values, made once per distinct pair."""
        if read == self._read_timeout and connect == self._connect_timeout:
            return self._default_timeout
        key = (read, connect)
        timeout = self._timeouts.get(key)
        if timeout is None:
            if len(self._timeouts) >= _TIMEOUT_CACHE_SIZE:
                self._timeouts.clear()
            timeout = self._timeouts[key] = _client_timeout(read, connect)
        return timeout


def _client_timeout(read: float | None, connect: float | None) -> aiohttp.ClientTimeout:
    # No total: like httpx, a slow answer that keeps arriving is not cut off.
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)


def _multipart(request_data: RequestData) -> aiohttp.FormData:
    """The parameters as form fields plus the files, as HTTPXRequest sends them."""
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in request_data.multipart_data.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form


def _where(url: str) -> str:
    """``host:port … method`` of a Bot API URL, without the token in its path."""
    parts = urlsplit(url)
    method = parts.path.rstrip("/").rpartition("/")[2]
    return f"{method} at {parts.scheme}://{parts.netloc}"


def _leaks(exc: BaseException, url: str) -> bool:
    """Whether printing ``exc`` (or what it chains to) would print the URL's token."""
    path = urlsplit(url).path
    seen: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if seen is None:
            return False
        if path and path in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return True  # a chain this long is not worth the risk


def _cause(exc: BaseException, url: str) -> BaseException | None:
    """What to chain a PTB error to: ``exc`` unless its text carries the bot token."""
    return None if _leaks(exc, url) else exc


def _error(kind: type[_E], exc: BaseException, url: str, what: str) -> _E:
    """A PTB error naming the call and the aiohttp failure, never the token."""
    detail = str(exc)
    path = urlsplit(url).path
    if path:
        detail = detail.replace(path, "/<path hidden: it holds the bot token>")
    return kind(f"{_where(url)}: {what} ({type(exc).__name__}: {detail})")
