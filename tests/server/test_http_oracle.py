"""HttpOracle against scripted servers (httpx MockTransport): retries, Retry-After, refusals, laziness."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx
import pytest

from imgsteal.attack.http_oracle import HttpOracle, HttpOracleError, RetryPolicy, media_type_of, parse_retry_after
from imgsteal.attack.oracle import OracleError
from imgsteal.errors import ImgstealError

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05)
INFO = {"kind": "sr", "scale": 4}


class Script:
    """A fake API: answers /v1/info, and /v1/translate by a per-body list of scripted replies."""

    def __init__(self, replies: dict[bytes, list] | None = None, delay_s: float = 0.0) -> None:
        self.replies = {k: list(v) for k, v in (replies or {}).items()}
        self.calls: Counter[bytes] = Counter()
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.auth: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers.get("authorization", ""))
        if request.url.path == "/v1/info":
            return httpx.Response(200, json=INFO)
        body = request.content
        with self.lock:
            self.calls[body] += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            queue = self.replies.get(body)
            reply = queue.pop(0) if queue else 200
        finally:
            with self.lock:
                self.active -= 1
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, tuple):
            status, headers = reply
        else:
            status, headers = reply, {}
        if status == 200:
            return httpx.Response(200, content=b"answer:" + body, headers={"content-type": "image/png"})
        return httpx.Response(status, json={"error": f"scripted {status}"}, headers=headers)


def oracle_for(script: Script, concurrency: int = 4, retry: RetryPolicy = FAST, **kwargs) -> HttpOracle:
    return HttpOracle("http://victim.test/", api_key="isk_a_b", concurrency=concurrency, retry=retry,
                      transport=httpx.MockTransport(script), **kwargs)


def answers(oracle: HttpOracle, bodies: list[bytes]) -> dict[bytes, object]:
    with oracle:
        return {a.key: a for a in oracle.stream((b, b) for b in bodies)}


def test_answers_every_request_once_with_the_key():
    script = Script(delay_s=0.01)
    bodies = [f"img{i}".encode() for i in range(20)]
    oracle = oracle_for(script, concurrency=4)
    got = answers(oracle, bodies)
    assert {k: a.image for k, a in got.items()} == {b: b"answer:" + b for b in bodies}
    assert all(a.error is None and a.latency_s > 0 for a in got.values())
    assert set(script.calls.values()) == {1}
    assert 1 < script.max_active <= 4
    assert script.auth == {"Bearer isk_a_b"}
    assert oracle.stats.answered == 20


def test_transient_errors_are_retried_and_permanent_ones_are_not():
    script = Script({
        b"flaky": [503, 502, 200],
        b"slow": [httpx.ReadTimeout("slow"), 200],
        b"dropped": [httpx.ConnectError("refused"), 200],
        b"broken": [500] * 10,
        b"bad image": [400],
        b"too big": [413],
        b"wrong type": [415],
    })
    oracle = oracle_for(script)
    got = answers(oracle, list(script.replies))
    for ok in (b"flaky", b"slow", b"dropped"):
        assert got[ok].image == b"answer:" + ok
    assert script.calls[b"flaky"] == 3
    assert got[b"broken"].image is None and "gave up after 4 tries" in got[b"broken"].error
    assert script.calls[b"broken"] == FAST.max_attempts
    for refused, status in ((b"bad image", 400), (b"too big", 413), (b"wrong type", 415)):
        assert got[refused].image is None and got[refused].error.startswith(f"HTTP {status}")
        assert script.calls[refused] == 1
    assert oracle.stats.refused == 3 and oracle.stats.gave_up == 1


def test_429_pauses_for_retry_after_and_does_not_use_up_tries():
    script = Script({b"a": [(429, {"Retry-After": "0.4"}), (429, {"Retry-After": "0.4"}), 200]})
    oracle = oracle_for(script, retry=RetryPolicy(max_attempts=1, backoff_base_s=0.01))
    started = time.perf_counter()
    got = answers(oracle, [b"a"])
    assert got[b"a"].image == b"answer:a"
    assert time.perf_counter() - started >= 0.8
    assert oracle.stats.rate_limited == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_stream(status):
    script = Script({b"x": [status]})
    oracle = oracle_for(script, check=False)
    with oracle, pytest.raises(HttpOracleError) as err:
        list(oracle.stream([(b"x", b"x")]))
    assert isinstance(err.value, OracleError) and isinstance(err.value, ImgstealError)
    assert "API key" in str(err.value)


def test_a_bad_key_fails_before_any_query_is_sent():
    def handler(request):
        return httpx.Response(401, json={"error": "missing or unknown API key"})

    oracle = HttpOracle("http://victim.test", api_key="wrong", transport=httpx.MockTransport(handler), retry=FAST)
    pulled = []

    def requests():
        pulled.append(1)
        yield b"x", b"x"

    with oracle, pytest.raises(HttpOracleError, match="refused the API key"):
        list(oracle.stream(requests()))
    assert pulled == []


def test_an_unreachable_api_is_a_clear_error():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    with HttpOracle("http://victim.test", transport=httpx.MockTransport(handler), retry=FAST) as oracle:
        with pytest.raises(HttpOracleError, match="cannot reach"):
            oracle.info()


def test_requests_are_pulled_lazily():
    """Never more than `concurrency` requests pulled beyond the answers the caller has taken."""
    concurrency = 3
    script = Script(delay_s=0.02)
    pulled = 0

    def requests():
        nonlocal pulled
        for i in range(30):
            pulled += 1
            yield i, f"r{i}".encode()

    with oracle_for(script, concurrency=concurrency) as oracle:
        taken = 0
        for _ in oracle.stream(requests()):
            taken += 1
            # Unstored answers = pulled - (taken - 1) (the one in hand is not stored yet).
            assert pulled - (taken - 1) <= concurrency
            time.sleep(0.005)  # the caller storing the answer
        assert taken == 30


def test_helpers():
    assert media_type_of(b"\x89PNG\r\n\x1a\n...") == "image/png"
    assert media_type_of(b"\xff\xd8\xff\xe0...") == "image/jpeg"
    assert media_type_of(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert media_type_of(b"BM....") == "image/bmp"
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    oracle = HttpOracle("http://h:1/v1/translate", transport=httpx.MockTransport(Script()), check=False)
    assert oracle.url == "http://h:1"
    oracle.close()
    oracle.close()  # idempotent
    with pytest.raises(HttpOracleError):
        list(oracle.stream([(1, b"x")]))
