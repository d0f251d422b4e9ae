"""The victim's inference API as an oracle: `POST {url}/v1/translate`, many requests in flight.

The adversary knows only the URL and an API key. An asyncio loop in a background thread runs the
requests (httpx); the caller's thread pulls inputs from the request iterator lazily, never more than
`concurrency` ahead of the answers it has taken, so a harvest killed at any moment has at most
`concurrency` answered-but-unstored queries (paid for twice after resuming).

Retries: time-outs, connection errors and 5xx are retried with exponential backoff and full jitter,
at most `max_attempts` tries; a 429 pauses every worker for its Retry-After and does not use up
tries. 400/413/415 (the server refuses this image) come back as a failed answer; 401/403 (the key is
wrong or revoked) stop the harvest with HttpOracleError.

`HttpOracleBase` holds all of that (the loop thread, lazy streaming, retries, rate-limit pauses) for
any HTTP API; `HttpOracle` speaks imgsteal's own API, `imgsteal.attack.api_spec.SpecOracle` any API
described by a spec file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Hashable, Iterable, Iterator, TypeVar

import httpx

from imgsteal.attack.oracle import OracleAnswer, OracleError
from imgsteal.errors import ImgstealError

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 500, 502, 503, 504})
RATE_LIMIT_STATUS = frozenset({429})
KEY_HELP = "set IMGSTEAL_API_KEY or pass --api-key-file"


class HttpOracleError(OracleError, ImgstealError):
    """The API cannot be used at all: unreachable, not an imgsteal API, or the key is refused."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Seconds throughout."""

    max_attempts: int = 6  # tries per request for time-outs, connection errors and 5xx
    backoff_base_s: float = 0.25  # the n-th retry waits uniform(0, min(backoff_max_s, base * 2**(n-1)))
    backoff_max_s: float = 30.0
    max_rate_limited: int = 1000  # 429 answers tolerated per request before giving up on it

    def backoff(self, retry: int) -> float:
        """Full-jitter exponential backoff before retry number `retry` (1, 2, ...)."""
        return random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1)))


@dataclass
class HttpOracleStats:
    """Counters since the oracle was made (read from any thread; updated by the loop thread)."""

    answered: int = 0
    refused: int = 0  # permanent 4xx: the server will not answer this image
    gave_up: int = 0  # transient errors on every try
    retries: int = 0  # time-outs, connection errors, 5xx that were retried
    rate_limited: int = 0  # 429 answers


@dataclass(frozen=True)
class Exchange:
    """The end of one request's tries: a 2xx `response`, or `error` (the request failed for good)."""

    response: httpx.Response | None
    error: str | None = None
    latency_s: float = 0.0  # of the answered try, seconds


def media_type_of(data: bytes) -> str:
    """The image/* type of encoded bytes from their magic number (PNG when unknown: let the server judge)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return "image/png"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; HTTP dates are rare for APIs and read as None)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def check_api_key(key: str, source: str = "the API key") -> str:
    """`key` without surrounding whitespace; HttpOracleError (never showing it) if what is left is
    empty or not printable ASCII, which no HTTP header could carry."""
    key = key.strip()
    if not key or any(ord(c) < 0x21 or ord(c) > 0x7E for c in key):
        raise HttpOracleError(f"{source} is empty or has spaces, control or non-ASCII characters (not shown)")
    return key


def _error_text(response: httpx.Response) -> str:
    """`HTTP <status>: <detail>`, the detail from a JSON error body ({"error"|"detail"|"message": ...})."""
    detail = None
    try:
        body = response.json()
    except Exception:
        body = None
    if isinstance(body, dict):
        for name in ("error", "detail", "message"):
            value = body.get(name)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, (str, int, float)) and str(value):
                detail = str(value)[:200]
                break
    return f"HTTP {response.status_code}: {detail or response.reason_phrase}"


class HttpOracleBase:
    """Plumbing shared by HTTP oracles: a loop thread with one httpx client, lazy `stream`, retries.

    Subclasses implement `_query(key, data) -> OracleAnswer`, sending with `_exchange`, and may
    override `_before_stream` (a check before the first query) and `_refuse_key` (401/403).
    concurrency: requests in flight; timeout_s: per request (read) time-out; transport: an httpx
    async transport (tests); client_options: more httpx.AsyncClient arguments (headers, auth, base_url);
    requests_per_s: pace sends to at most this many per second (None: no pacing);
    rate_limit_status / transient_status: statuses that pause everyone / are retried.
    """

    def __init__(
        self,
        url: str,
        concurrency: int = 8,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        client_options: dict[str, Any] | None = None,
        requests_per_s: float | None = None,
        rate_limit_status: Iterable[int] = RATE_LIMIT_STATUS,
        transient_status: Iterable[int] = TRANSIENT_STATUS,
        retry_after_header: str = "Retry-After",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if requests_per_s is not None and requests_per_s <= 0:
            raise ValueError(f"requests_per_s must be > 0, got {requests_per_s}")
        self.url = url
        self.concurrency = concurrency
        self.retry = retry
        self.stats = HttpOracleStats()
        self.rate_limit_status = frozenset(rate_limit_status)
        self.transient_status = frozenset(transient_status)
        self.retry_after_header = retry_after_header
        self._interval = 1.0 / requests_per_s if requests_per_s else 0.0
        self._next_slot = 0.0  # loop.time() of the next paced send
        self._pause_until = 0.0  # loop.time() before which no worker sends (after a 429)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="imgsteal-http-oracle", daemon=True)
        self._thread.start()
        self._closed = False
        options = {"headers": {"User-Agent": "imgsteal-harvest"}, **(client_options or {})}

        async def make_client() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
                transport=transport,
                **options,
            )

        self._client = self._call(make_client())

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- hooks ----------------------------------------------------------------------------------
    def _before_stream(self) -> None:
        """Called once per `stream` before anything is sent (e.g. check the URL and the key)."""

    def _refuse_key(self, response: httpx.Response) -> None:
        """Raise HttpOracleError when `response` says the key is wrong or revoked (401/403)."""
        if response.status_code in (401, 403):
            raise HttpOracleError(f"{self.url} refused the API key ({self._error_text(response)})")

    def _error_text(self, response: httpx.Response) -> str:
        return _error_text(response)

    async def _query(self, key: Hashable, data: bytes) -> OracleAnswer:
        raise NotImplementedError

    # -- sending with retries -------------------------------------------------------------------
    async def _wait_for_pause(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._pause_until - loop.time()
        if delay > 0:
            # Spread the restart so the workers do not all hit the fresh bucket at once.
            await asyncio.sleep(delay + random.uniform(0.0, 0.1))
        if self._interval:
            now = loop.time()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            if slot > now:
                await asyncio.sleep(slot - now)

    async def _exchange(self, send: Callable[[], Awaitable[httpx.Response]]) -> Exchange:
        """Call `send()` until it answers 2xx or fails for good; raises HttpOracleError on a refused key.

        Time-outs, connection errors and `transient_status` are retried with backoff (at most
        `retry.max_attempts` tries); `rate_limit_status` pauses every request of this oracle for
        Retry-After (or a backoff) without using up tries; any other status fails at once.
        """
        loop = asyncio.get_running_loop()
        failures = 0
        limited = 0
        while True:
            await self._wait_for_pause()
            started = time.perf_counter()
            retry_after = None
            try:
                response = await send()
            except httpx.TimeoutException as exc:
                problem = f"time-out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection error ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Exchange(response, latency_s=time.perf_counter() - started)
                self._refuse_key(response)
                retry_after = parse_retry_after(response.headers.get(self.retry_after_header))
                if status in self.rate_limit_status:
                    self.stats.rate_limited += 1
                    limited += 1
                    if limited > self.retry.max_rate_limited:
                        self.stats.gave_up += 1
                        return Exchange(None, f"rate limited {limited} times; gave up")
                    wait = retry_after if retry_after is not None else self.retry.backoff(limited)
                    self._pause_until = max(self._pause_until, loop.time() + wait)
                    continue
                if status not in self.transient_status:
                    self.stats.refused += 1
                    return Exchange(None, self._error_text(response))
                problem = self._error_text(response)
            failures += 1
            if failures >= self.retry.max_attempts:
                self.stats.gave_up += 1
                return Exchange(None, f"gave up after {failures} tries: {problem}")
            self.stats.retries += 1
            await asyncio.sleep(max(self.retry.backoff(failures), retry_after or 0.0))

    # -- streaming ------------------------------------------------------------------------------
    def stream(self, requests: Iterable[tuple[Hashable, bytes]]) -> Iterator[OracleAnswer]:
        """Send each (key, encoded image); yield answers in completion order.

        Requests are pulled from `requests` in the caller's thread, only when fewer than
        `concurrency` are in flight. Raises HttpOracleError when the key is refused.
        """
        if self._closed:
            raise HttpOracleError(f"this {type(self).__name__} is closed")
        self._before_stream()
        done: queue.Queue[concurrent.futures.Future] = queue.Queue()
        in_flight: set[concurrent.futures.Future] = set()
        source = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < self.concurrency:
                    try:
                        key, data = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    future = asyncio.run_coroutine_threadsafe(self._query(key, data), self._loop)
                    in_flight.add(future)
                    future.add_done_callback(done.put)
                if not in_flight:
                    return
                future = self._next_done(done)
                in_flight.discard(future)
                yield future.result()  # re-raises HttpOracleError (bad key) in the caller
        finally:
            for future in in_flight:
                future.cancel()

    def _next_done(self, done: queue.Queue) -> concurrent.futures.Future:
        # Wake up now and then so Ctrl-C reaches the caller and a dead loop thread is noticed.
        while True:
            try:
                return done.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise HttpOracleError("the HTTP oracle's event loop stopped unexpectedly") from None


class HttpOracle(HttpOracleBase):
    """Oracle over an imgsteal-style inference API at `url` (http://HOST:PORT).

    api_key: sent as `Authorization: Bearer KEY`; concurrency: requests in flight; timeout_s: per
    request (read) time-out; transport: an httpx async transport (tests); check: ask /v1/info once
    before the first query, so a bad URL or key fails before anything is sent.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        concurrency: int = 8,
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        check: bool = True,
    ) -> None:
        base = url.rstrip("/")
        for suffix in ("/v1/translate", "/v1"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        headers = {"User-Agent": "imgsteal-harvest"}
        if api_key:
            headers["Authorization"] = f"Bearer {check_api_key(api_key)}"
        super().__init__(base, concurrency, timeout_s=timeout_s, retry=retry, transport=transport,
                         client_options={"base_url": base, "headers": headers})
        self._check = check
        self._checked: dict | None = None

    def __repr__(self) -> str:
        return f"HttpOracle({self.url!r}, concurrency={self.concurrency})"

    def _before_stream(self) -> None:
        if self._check:
            self.info()

    # -- the API --------------------------------------------------------------------------------
    def info(self) -> dict:
        """The API's /v1/info (task, scale, limits); raises HttpOracleError if unreachable or the key is refused."""
        if self._checked is None:
            self._checked = self._call(self._info())
        return self._checked

    async def _info(self) -> dict:
        for retry in range(1, self.retry.max_attempts + 1):
            try:
                response = await self._client.get("/v1/info")
            except httpx.TransportError as exc:
                problem = f"cannot reach {self.url} ({type(exc).__name__}: {exc})"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise HttpOracleError(f"{self.url}/v1/info did not answer JSON: is this an imgsteal API?") from None
                self._refuse_key(response)
                if response.status_code not in TRANSIENT_STATUS and response.status_code != 429:
                    raise HttpOracleError(f"{self.url}/v1/info answered {_error_text(response)}: is this an imgsteal API?")
                problem = f"{self.url}/v1/info answered {_error_text(response)}"
            if retry < self.retry.max_attempts:
                await asyncio.sleep(self.retry.backoff(retry))
        raise HttpOracleError(problem)

    def _refuse_key(self, response: httpx.Response) -> None:
        if response.status_code == 401:
            raise HttpOracleError(f"{self.url} refused the API key ({_error_text(response)}); {KEY_HELP} with a valid one")
        if response.status_code == 403:
            raise HttpOracleError(f"{self.url} refused the API key ({_error_text(response)}); it may have been revoked")

    async def _query(self, key: Hashable, data: bytes) -> OracleAnswer:
        headers = {"Content-Type": media_type_of(data)}
        done = await self._exchange(lambda: self._client.post("/v1/translate", content=data, headers=headers))
        if done.response is None:
            return OracleAnswer(key=key, image=None, error=done.error)
        self.stats.answered += 1
        return OracleAnswer(key=key, image=done.response.content, latency_s=done.latency_s)
