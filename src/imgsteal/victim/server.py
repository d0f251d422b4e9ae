"""The victim's inference API: images in, PNG images out, behind API keys, a rate limit and a query log.

    POST /v1/translate   an image (multipart field `image`, or the raw body with its image/* type) -> PNG
    GET  /v1/info        task, scale and the service limits (nothing about the network)
    GET  /healthz        liveness, no key needed

A request goes: key check (401/403) -> per-key token bucket (429 + Retry-After) -> body read with a
byte limit (413) -> image header check, pixel limit before any decoding (413; decompression bombs)
-> decode in a codec thread (400 broken, 415 unsupported) -> fair micro-batched model call (429 when
the key has its share of output pixels in flight, 503 when the server is full) -> output defences
-> PNG -> query-log row committed -> response. Unexpected failures answer 500 and the service
keeps serving.

A client that hangs up costs nothing more: from the end of its body on, the request watches for
the disconnect; its queued image is dropped before the model runs, and an answer computed for a
client that has gone is not logged (the check runs right before the log row is written, so only a
client leaving within the last milliseconds, between that check and the send, is still counted).

Extraction monitor (`monitor=True`, off by default): each answered query's input features go to a
per-key detector (imgsteal.defenses.monitor) in the codec thread after the answer is encoded; an
alert is written to the query log (the query's `monitor` column and the `monitor_alerts` table) and,
by `monitor_policy`, the key is throttled to `monitor_throttle_rate` requests/s or revoked - from the
query that raised the alert on: its answer is withheld too (logged, "answer withheld").

Memory and slow clients: see `imgsteal.victim.memory` (the bound stated at start-up, from
`max_memory_mb`) and `imgsteal.victim.slow_clients` (header and body deadlines, connection cap).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import io
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from copy import copy
from pathlib import Path
from typing import AsyncIterator, Sequence

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from imgsteal.data.images import ImageReadError, decode_image, encode_png, sha256_bytes, to_uint8
from imgsteal.defenses.base import Defense
from imgsteal.defenses.monitor import (ExtractionMonitor, MonitorAlert, MonitorConfig, MonitorPolicy, Stream,
                                      query_image_features, streams_of)
from imgsteal.files import atomic_write_text
from imgsteal.victim.accounts import AccountsDB, ApiKey, QueryLogWriter, QueryRecord
from imgsteal.victim.batching import BatcherBusy, KeyBusy, MicroBatcher, lower_priority
from imgsteal.victim.memory import MB, MemoryPlan, activation_bytes_per_output_pixel, plan_memory, rss_bytes
from imgsteal.victim.inference import Translator

log = logging.getLogger(__name__)
# On SIGTERM/Ctrl-C: stop accepting at once, give requests in flight this long to be answered, then
# abandon them (a model call still running is not waited for) and close the databases.
SHUTDOWN_GRACE_S = 3.0

# Accepted encodings: Pillow format name -> media type. Anything else Pillow can open gets 415.
ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}
RAW_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp", "image/x-ms-bmp"})


class ServerSettings(BaseModel):
    """Limits and batching of the service. Pixels count the input image (width x height)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1, description="request body limit, bytes (413 above)")
    max_pixels: int = Field(512 * 512, ge=1, description="input image limit, width x height (413 above)")
    rate_per_s: float = Field(20.0, ge=0, description="tokens per second per key; 0 = no rate limit")
    burst: int = Field(40, ge=1, description="token bucket size per key")
    max_batch: int = Field(8, ge=1, description="images per model call at most")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a request may wait for a batch to fill, ms")
    max_queue: int = Field(256, ge=1, description="images waiting for the model at most (503 above)")
    max_batch_pixels: int = Field(2 * 1024 * 1024, ge=1, description="input pixels per model call at most")
    codec_threads: int = Field(min(4, os.cpu_count() or 1), ge=1, description="threads decoding and encoding images")
    # Fair sharing and memory (see imgsteal.victim.batching and imgsteal.victim.memory).
    model_workers: int = Field(2, ge=1, le=16, description="model calls running at once; a key leads at most one")
    max_key_pixels: int | None = Field(None, ge=1, description="output pixels queued or running per key (429 above); default 2 max-size answers")
    max_memory_mb: float | None = Field(None, gt=0, description="memory budget of the process, MB; batch and in-flight limits are derived from it (None: derived from the other limits, stated at start-up)")
    # Slow clients (see imgsteal.victim.slow_clients).
    header_timeout_s: float = Field(10.0, gt=0, description="seconds from a request's first byte to its complete headers (408 after)")
    body_timeout_s: float = Field(30.0, gt=0, description="seconds from the headers to the complete body (408 after)")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this many seconds")
    max_connections: int = Field(64, ge=1, description="open connections at most; more are closed at accept")
    # Defences must not stand out (see _Service.finish and shape_latency).
    defense_floor_ms_per_mpx: float | None = Field(None, ge=0, description="with defences: every answer's post-processing takes at least this many ms per million output pixels (covers triggers before one has been measured)")
    # Extraction monitor (imgsteal.defenses.monitor; the monitor_* fields are MonitorConfig's, written once there).
    monitor: bool = Field(False, description="watch each key's query stream for a model extraction (docs/defenses.md)")
    monitor_policy: MonitorPolicy = copy(MonitorConfig.model_fields["policy"])
    monitor_min_images: int = copy(MonitorConfig.model_fields["min_images"])
    monitor_distinct: int = copy(MonitorConfig.model_fields["distinct"])
    monitor_distinct_share: float = copy(MonitorConfig.model_fields["distinct_share"])
    monitor_mosaics: bool = copy(MonitorConfig.model_fields["mosaics"])
    monitor_radius: float = copy(MonitorConfig.model_fields["radius"])
    monitor_normality: float = copy(MonitorConfig.model_fields["normality"])
    monitor_history: int = copy(MonitorConfig.model_fields["history"])
    monitor_max_keys: int = copy(MonitorConfig.model_fields["max_keys"])
    monitor_throttle_rate: float = copy(MonitorConfig.model_fields["throttle_rate"])

    def monitor_config(self) -> MonitorConfig | None:
        """The monitor's settings, or None when the monitor is off."""
        if not self.monitor:
            return None
        return MonitorConfig(**{name: getattr(self, f"monitor_{name}") for name in MonitorConfig.model_fields})


class ApiError(Exception):
    """An expected refusal: answered as JSON {"error": detail} with `status`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class TokenBucketLimiter:
    """Per-key token buckets: `rate` tokens per second, at most `burst` stored; one token per request."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: int) -> float:
        """Spend a token of `key_id`: 0.0 if allowed, else seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


# -- request parsing -------------------------------------------------------------------------------
def api_key_of(request: Request) -> str | None:
    """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {declared!r}") from None
        if declared_bytes > limit:
            raise ApiError(413, f"request body of {declared_bytes} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def image_bytes_of(request: Request, body: bytes) -> bytes:
    """The encoded image inside `body`: the multipart field `image`, or the body itself for image/* types."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        parser = MultiPartParser(request.headers, _replay(body), max_files=1, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, f"malformed multipart body: {exc.message}") from None
        try:
            field = form.get("image")
            if field is None:
                raise ApiError(400, "the multipart body has no 'image' field")
            if isinstance(field, str):
                raise ApiError(400, "the multipart field 'image' must be a file")
            return await field.read()
        finally:
            await form.close()
    if media in RAW_MEDIA_TYPES:
        return body
    if not media:
        raise ApiError(415, "no Content-Type: send multipart/form-data with an 'image' field, or the image with its image/* type")
    raise ApiError(415, f"unsupported Content-Type {media!r}; accepted: multipart/form-data, {', '.join(sorted(ACCEPTED_FORMATS.values()))}")


def check_image_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) read from the header only, before any pixel is decoded.

    Raises ApiError 400 (empty, not an image), 415 (a format the service does not take),
    413 (more than `max_pixels` pixels).
    """
    if not data:
        raise ApiError(400, "the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: parses the header, decodes nothing
            fmt, (width, height) = img.format, img.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"image is over the pixel limit ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ApiError(400, "not a readable image") from None
    if fmt not in ACCEPTED_FORMATS:
        raise ApiError(415, f"unsupported image format {fmt}; accepted: {', '.join(ACCEPTED_FORMATS)}")
    if width < 1 or height < 1:
        raise ApiError(400, f"image of {width} x {height} pixels has no pixels")
    if width * height > max_pixels:
        raise ApiError(413, f"image of {width} x {height} pixels is over the limit of {max_pixels} pixels")
    return width, height


def encode_png_uniform(image: torch.Tensor) -> bytes:
    """PNG with zlib level 0 (stored blocks): its byte size depends only on the pixel size, never on the content."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def _decode(data: bytes) -> torch.Tensor:
    try:
        return decode_image(data, "image")
    except ImageReadError as exc:
        raise ApiError(400, f"the image cannot be decoded (truncated or corrupt): {exc}") from None


def _revoked() -> ApiError:
    return ApiError(403, "this API key has been revoked")


def _throttled(wait_s: float) -> ApiError:
    """A flagged key's refusal: the same words as any rate limit, so the answer does not say why."""
    return ApiError(429, "rate limit for this key exceeded", {"Retry-After": str(max(1, math.ceil(wait_s)))})


def _key_busy() -> ApiError:
    return ApiError(429, "this key already has its share of work in flight; retry when an answer arrives",
                    {"Retry-After": "1"})


async def _client_gone(request: Request) -> None:
    """Returns when the client has disconnected (call only after the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# -- the app ---------------------------------------------------------------------------------------
class _Service:
    """Everything one app instance holds: model batcher, codec threads, key store, query log, limiter."""

    def __init__(self, translator: Translator, db_path: Path, settings: ServerSettings, defenses: Sequence[Defense]) -> None:
        self.translator = translator
        self.settings = settings
        self.defenses = list(defenses)
        self.db_path = db_path
        self.accounts = AccountsDB(db_path)
        self.limiter = TokenBucketLimiter(settings.rate_per_s, settings.burst)
        self.memory = self._plan_memory()
        scale = int(translator.info().get("scale", 1))
        self.batcher = MicroBatcher(
            translator, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
            max_batch_pixels=settings.max_batch_pixels, max_batch_output_pixels=self.memory.max_batch_output_pixels,
            scale=scale, max_key_pixels=settings.max_key_pixels or 2 * settings.max_pixels * scale * scale,
            workers=settings.model_workers, max_inflight_bytes=self.memory.max_inflight_bytes)
        self.abandoned = 0  # requests whose client left before the answer (not logged)
        self._defended_rates: collections.deque[float] = collections.deque(maxlen=32)  # s per output px, defended answers
        self.codec: ThreadPoolExecutor | None = None
        self.codec_large: ThreadPoolExecutor | None = None  # large images, at low priority (like their model calls)
        self.log_writer: QueryLogWriter | None = None
        monitor_config = settings.monitor_config()
        self.monitor = ExtractionMonitor(monitor_config) if monitor_config is not None else None
        # Throttled and revoked by the monitor, by stream: ("key", id) or ("account", name) (revocations
        # are also in the database, committed shortly after)
        self.monitor_next_s: dict[Stream, float] = {}  # stream -> time.monotonic() of its next allowed request
        self.monitor_revoked: set[Stream] = set()

    def _plan_memory(self) -> MemoryPlan:
        """Measure the model's activation cost and derive the memory limits (ImgstealError if too small)."""
        from imgsteal.errors import ImgstealError

        s = self.settings
        scale = int(self.translator.info().get("scale", 1))
        try:
            per_px = activation_bytes_per_output_pixel(self.translator, scale, getattr(self.translator, "device", None))
        except Exception as exc:  # a model that fails here fails its requests later (500), the service starts
            log.warning("could not measure the model's memory per output pixel (%s); assuming 4096 bytes", exc)
            per_px = 4096.0
        try:
            return plan_memory(baseline=rss_bytes(), activation_per_px=per_px, workers=s.model_workers,
                               max_pixels=s.max_pixels, scale=scale, max_body_bytes=s.max_body_bytes,
                               max_connections=s.max_connections,
                               max_memory_bytes=None if s.max_memory_mb is None else int(s.max_memory_mb * MB))
        except ValueError as exc:
            raise ImgstealError(str(exc)) from None

    async def start(self) -> None:
        self.codec = ThreadPoolExecutor(max_workers=self.settings.codec_threads, thread_name_prefix="imgsteal-codec")
        self.codec_large = ThreadPoolExecutor(max_workers=self.settings.codec_threads, thread_name_prefix="imgsteal-codec-large",
                                              initializer=lower_priority)
        self.log_writer = QueryLogWriter(self.db_path)
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop(wait=False)  # a model call still running is abandoned, not waited for
        for pool in (self.codec, self.codec_large):
            if pool is not None:
                pool.shutdown(wait=True)
        self.close_files()

    def close_files(self) -> None:
        """Commit the queued query log and close the SQLite connections (a clean close removes the
        -wal/-shm files). Idempotent."""
        if self.log_writer is not None:
            self.log_writer.close()
            self.log_writer = None
        self.accounts.close()

    def authorize(self, request: Request) -> ApiKey:
        key = self.accounts.authenticate(api_key_of(request))
        if key is None:
            raise ApiError(401, "missing or unknown API key (send Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"})
        if key.revoked or any(stream in self.monitor_revoked for stream in streams_of(key.key_id, key.account)):
            raise _revoked()
        return key

    def finish_watched(self, key: ApiKey, image: torch.Tensor, output: torch.Tensor,
                       input_sha: str) -> tuple[bytes, str | None, float, list[MonitorAlert]]:
        """`finish`, then (monitor on) the query's features to the key's monitor; runs in a codec thread.
        The monitor's time is not part of the returned seconds (latency shaping of defended answers)."""
        png, label, took_s = self.finish(key.name, image, output, input_sha)
        alerts: list[MonitorAlert] = []
        if self.monitor is not None:
            try:
                alerts = self.monitor.observe(key.key_id, key.name,
                                              query_image_features(image, self.monitor.config.mosaics), key.account)
            except Exception:  # the monitor never costs a client its answer
                log.exception("extraction monitor failed on a query of key %r", key.name)
        return png, label, took_s, alerts

    def on_alert(self, alert: MonitorAlert) -> None:
        """Record the alert (query log database) and apply the policy to the later requests of the key,
        or of every key of the account when the account's keys together raised it."""
        if alert.action == MonitorPolicy.revoke.value:
            self.monitor_revoked.add(alert.stream)
        elif alert.action == MonitorPolicy.throttle.value:
            assert self.monitor is not None
            self.monitor_next_s[alert.stream] = time.monotonic() + 1.0 / self.monitor.config.throttle_rate
        log.warning("extraction monitor: key %r flagged (%s after %d queries; policy %s)", alert.key_name,
                    alert.label(), alert.queries, alert.action)
        assert self.log_writer is not None
        future = self.log_writer.submit_alert(alert)
        future.add_done_callback(lambda f: f.exception() and log.error("could not record a monitor alert: %s", f.exception()))

    def withheld(self, alerts: list[MonitorAlert]) -> ApiError | None:
        """The refusal that replaces the answer of the query that raised a revoke or throttle alert (None:
        send it). That query is the evidence: a packed harvest shows its extraction in its first mosaic, and
        answering it would hand over dozens of pairs. Same words as any revoked key or rate limit."""
        actions = {alert.action for alert in alerts}
        if MonitorPolicy.revoke.value in actions:
            return _revoked()
        if MonitorPolicy.throttle.value in actions:
            assert self.monitor is not None
            return _throttled(1.0 / self.monitor.config.throttle_rate)
        return None

    def monitor_refuses(self, key: ApiKey) -> float:
        """Seconds a throttled key must wait (0.0: go ahead; one request per 1 / throttle_rate seconds
        for a throttled key, and for all the keys of a throttled account together)."""
        throttled = [stream for stream in streams_of(key.key_id, key.account) if stream in self.monitor_next_s]
        if not throttled:
            return 0.0
        now = time.monotonic()
        wait_s = max(self.monitor_next_s[stream] - now for stream in throttled)
        if wait_s > 0:
            return wait_s
        assert self.monitor is not None
        for stream in throttled:
            self.monitor_next_s[stream] = now + 1.0 / self.monitor.config.throttle_rate
        return 0.0

    def finish(self, key_name: str, image: torch.Tensor, output: torch.Tensor, input_sha: str) -> tuple[bytes, str | None, float]:
        """Apply the defences in order, then encode; returns (PNG bytes, applied labels or None, seconds taken).

        With defences the PNG is stored uncompressed, so its size depends only on the pixel size: an
        altered answer (a blurred watermark trigger compresses better) cannot be told by its size."""
        started = time.perf_counter()
        labels = []
        for defense in self.defenses:
            output, label = defense.apply(key_name, image, output, input_sha)
            if label:
                labels.append(label)
        png = encode_png_uniform(output) if self.defenses else encode_png(output)
        return png, ",".join(labels) or None, time.perf_counter() - started

    async def shape_latency(self, took_s: float, output_pixels: int, label: str | None) -> None:
        """With defences, hold every answer until its post-processing has taken as long as the slowest
        recent defended answer would have for its size (rate per output pixel), so answers a defence
        changed (e.g. watermark triggers: alteration + durable trigger write) do not stand out by latency."""
        if not self.defenses or output_pixels <= 0:
            return
        if label:
            self._defended_rates.append(took_s / output_pixels)
        preset = (self.settings.defense_floor_ms_per_mpx or 0.0) / 1000.0 / 1e6
        floor = max([preset, *self._defended_rates]) * output_pixels
        if took_s < floor:
            await asyncio.sleep(floor - took_s)

    async def translate(self, request: Request) -> Response:
        started = time.perf_counter()
        queried_at = time.time()
        key = self.authorize(request)
        wait_s = self.limiter.take(key.key_id)
        if wait_s > 0:
            raise ApiError(429, f"rate limit of {self.settings.rate_per_s:g} requests/s exceeded",
                           {"Retry-After": str(max(1, math.ceil(wait_s)))})
        wait_s = self.monitor_refuses(key)
        if wait_s > 0:
            raise _throttled(wait_s)
        if not self.batcher.admits(key.key_id):  # before reading the body: a refused flood costs little
            raise _key_busy()
        body = await read_body(request, self.settings.max_body_bytes)
        data = await image_bytes_of(request, body)
        width, height = check_image_header(data, self.settings.max_pixels)
        if not self.batcher.admits(key.key_id, width * height):  # before decoding
            raise _key_busy()
        codec = self.codec_large if self.batcher.is_large(width * height) else self.codec
        loop = asyncio.get_running_loop()
        gone = asyncio.ensure_future(_client_gone(request))  # the body is read: the next message is the hang-up
        try:
            image = await loop.run_in_executor(codec, _decode, data)
            input_sha = sha256_bytes(data)
            output = await self._model_answer(image, key, gone)
            png, label, took_s, alerts = await loop.run_in_executor(codec, self.finish_watched, key, image, output, input_sha)
            for alert in alerts:
                self.on_alert(alert)
            withheld = self.withheld(alerts)
            await self.shape_latency(took_s, output.shape[-1] * output.shape[-2], label)
            if gone.done():  # computed, but nobody is left to send it to: not an answered query
                self.abandoned += 1
                raise ClientDisconnect()
            assert self.log_writer is not None
            record = QueryRecord(key_id=key.key_id, queried_at=queried_at, input_sha256=input_sha, input_bytes=len(data),
                                 input_width=image.shape[-1], input_height=image.shape[-2], output_sha256=sha256_bytes(png),
                                 latency_ms=(time.perf_counter() - started) * 1000.0, defense=label,
                                 monitor="; ".join(alert.label() for alert in alerts) + (" (answer withheld)" if withheld else "")
                                 or None)
            query_id = await asyncio.wrap_future(self.log_writer.submit(record))
            if withheld is not None:
                raise withheld
        finally:
            gone.cancel()
        return Response(png, media_type="image/png", headers={"X-Query-Id": str(query_id)})

    async def _model_answer(self, image: torch.Tensor, key: ApiKey, gone: asyncio.Future) -> torch.Tensor:
        """The model's output for `image`, or ClientDisconnect (image dropped unrun) when the client leaves first."""
        if gone.done():
            self.abandoned += 1
            raise ClientDisconnect()
        answer = asyncio.ensure_future(self.batcher.submit(image, key.key_id))
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()  # removes the image from the queue if its batch has not started
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer
            self.abandoned += 1
            raise ClientDisconnect()
        try:
            return answer.result()
        except KeyBusy:
            raise _key_busy() from None
        except BatcherBusy:
            raise ApiError(503, "the service is busy; retry shortly", {"Retry-After": "1"}) from None

    def info(self, request: Request) -> dict:
        key = self.authorize(request)
        s = self.settings
        meta = self.translator.info()
        return {
            "kind": meta["kind"],
            "scale": meta["scale"],
            "input_media_types": sorted(ACCEPTED_FORMATS.values()),
            "output_media_type": "image/png",
            "limits": {"max_body_bytes": s.max_body_bytes, "max_pixels": s.max_pixels,
                       "rate_per_s": s.rate_per_s or None, "burst": s.burst if s.rate_per_s else None},
            "key": {"name": key.name},
        }


def create_app(
    translator: Translator,
    db_path: str | Path,
    settings: ServerSettings | None = None,
    defenses: Sequence[Defense] = (),
) -> FastAPI:
    """The inference API for `translator`, with keys and query log in the SQLite file `db_path`.

    defenses: output post-processors applied in order to every answer (none by default).
    """
    settings = settings or ServerSettings()
    # Our own header check refuses images over max_pixels first; Pillow's bomb guard stays as a
    # backstop but must never refuse an image the settings allow.
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS < settings.max_pixels:
        Image.MAX_IMAGE_PIXELS = settings.max_pixels
    service = _Service(translator, Path(db_path), settings, defenses)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="imgsteal victim API", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> dict:
        return service.info(request)

    @app.post("/v1/translate")
    async def translate(request: Request) -> Response:
        try:
            return await service.translate(request)
        except (ApiError, asyncio.CancelledError):
            raise
        except ClientDisconnect:  # nobody is left to answer
            raise ApiError(400, "client disconnected") from None
        except Exception:  # answered here, so it is not re-raised into the server's own error path
            log.exception("unexpected error answering POST /v1/translate")
            raise ApiError(500, "internal error") from None

    return app


def uvicorn_config(app: FastAPI, settings: ServerSettings, log_level: str = "warning"):
    """uvicorn's Config for `app` with the slow-client guards of `settings`: header and body
    deadlines (408), idle keep-alive time-out, and a cap on open connections."""
    import uvicorn

    from imgsteal.victim.slow_clients import BodyDeadline, guarded_h11

    return uvicorn.Config(BodyDeadline(app, settings.body_timeout_s), log_level=log_level,
                          access_log=log_level in ("info", "debug"), backlog=1024, lifespan="on",
                          http=guarded_h11(settings.header_timeout_s, settings.max_connections),
                          timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections + 1,
                          timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def listen(host: str = "127.0.0.1", port: int = 8000):
    """Bind and listen on host:port (port 0 picks a free one); returns the socket.

    Bind before creating anything (database, defence files): a port in use then fails cleanly.
    Raises ImgstealError naming host:port when the address cannot be bound.
    """
    import socket

    from imgsteal.errors import ImgstealError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        hint = " (is another server using it? pick another --port, or 0 for a free one)" \
            if exc.errno == errno.EADDRINUSE else ""
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # not create_server's "(while attempting ...)"
        raise ImgstealError(f"cannot listen on {host}:{port}: {reason}{hint}") from exc


def serve(
    model_path: str | Path | Translator,
    db_path: str | Path,
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    port_file: str | Path | None = None,
    log_level: str = "warning",
    on_ready=None,
    defenses: Sequence[Defense] = (),
    sock=None,
) -> None:
    """Load the victim model (or take the loaded Translator) and serve it until interrupted (SIGINT/SIGTERM).

    defenses: output defences applied in order to every answer (see imgsteal.defenses.registry).
    port 0 picks a free port; the port actually bound is written to `port_file` (if given) and passed
    to `on_ready(url)` before the first request is accepted. sock: a socket from `listen()` to serve
    on instead of binding host:port here (the caller then binds before creating its own files).
    The port is bound before the database is opened: a port in use leaves no database behind.
    The first SIGTERM or Ctrl-C stops accepting, answers what is in flight within SHUTDOWN_GRACE_S
    (then abandons it), closes the databases and returns; `port_file` is removed on the way out.
    """
    import signal
    import sys
    import threading

    import uvicorn

    from imgsteal.victim.inference import load_translator

    settings = settings or ServerSettings()
    translator = model_path if isinstance(model_path, Translator) else load_translator(model_path, device)
    if sock is None:
        sock = listen(host, port)
    # uvicorn handles the signals while it serves and re-raises them afterwards with the handlers it
    # found: these make that (and a signal before it starts) end serve() normally, after the cleanup
    # below, instead of killing the process (SIGTERM's default) before the files are tidied.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise_stop)
    service = None
    written_port_file = None
    try:
        app = create_app(translator, db_path, settings, defenses)
        service = app.state.service
        sys.stderr.write(service.memory.describe() + "\n")
        bound = sock.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        if port_file is not None:
            written_port_file = atomic_write_text(port_file, str(bound))
        if on_ready is not None:
            on_ready(url)
        config = uvicorn_config(app, settings, log_level)
        uvicorn.Server(config).run(sockets=[sock])
    except _Stop:
        pass
    finally:
        sock.close()
        if service is not None:
            service.close_files()  # already closed by a normal shutdown; not after a forced one
        if written_port_file is not None:
            with contextlib.suppress(OSError):
                written_port_file.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler `serve` installs: stop serving, tidy up, return."""


def _raise_stop(signum, frame) -> None:
    raise _Stop()
