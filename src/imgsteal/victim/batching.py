"""Dynamic micro-batching with fair sharing between API keys.

`MicroBatcher.submit(image, key=...)` queues a 3 x H x W tensor and resolves to the model's answer.
A runner coroutine picks the next batch and hands it to one of `workers` model threads:

- **Fair between keys.** Each key has a served-work counter (output pixels); the next batch is led
  by the waiting key that has been served least (a key that was idle joins at the level the last
  batch's lead had when it started, so it cannot bank credit from idle time). With two or more workers a key leads at most one running batch, so
  one key flooding large images holds one worker and the others stay free for everyone else.
- **Bounded in-flight work per key.** A key's queued plus running work is at most `max_key_pixels`
  output pixels (an SR answer counts scale^2 times its input); beyond that submit raises `KeyBusy`
  (the server answers 429), so one key cannot fill the queue.
- **Large work yields the CPU.** With two or more workers, batches of more than
  `large_batch_output_pixels` run only on the low-priority workers (threads at nice +10, and the
  threads the model starts from them), and the first worker, at normal priority, is kept for small
  batches: a small request never waits behind a large model call and wins the CPU when both run.
- **Bounded batches.** A batch holds same-size images only, at most `max_batch` of them, and at most
  `max_batch_pixels` input and `max_batch_output_pixels` output pixels (always >= 1 image): the
  server derives the output bound from its memory budget.
- **Dropped when abandoned.** A request whose caller went away (its future cancelled) is removed
  before its batch is formed: the model never runs for it.

Within the chosen size group, requests of the least-served keys go first; a batch waits at most
`max_wait_ms` after its first request for company. Images that arrive while batches run wait for
the next one: under load, batches fill up by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable

import torch

from imgsteal.victim.memory import request_bytes

log = logging.getLogger(__name__)


class BatcherBusy(RuntimeError):
    """More images are waiting than the queue allows; the caller should answer 503 and retry later."""


class KeyBusy(BatcherBusy):
    """This key already has its share of work in flight; the caller should answer 429 and retry later."""


@dataclass(eq=False)
class _Pending:
    image: torch.Tensor
    future: asyncio.Future
    arrived: float  # loop.time(), seconds
    key: Hashable
    cost: int  # output pixels
    nbytes: int  # memory.request_bytes

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


class MicroBatcher:
    """Group same-size images into batches for `run_batch` (N x C x H x W -> N x C' x H' x W').

    max_batch: images per model call at most; max_wait_ms: how long the first image of a batch may
    wait for company; max_queue: images waiting at most (beyond that submit raises BatcherBusy);
    max_batch_pixels / max_batch_output_pixels: input / output pixels per batch at most (>= 1 image);
    scale: output side / input side (4 for 4x SR), for output pixels; max_key_pixels: output pixels
    queued or running per key at most (KeyBusy above; a lone request is always admitted);
    workers: model calls that may run at once (threads); max_inflight_bytes: decoded inputs and
    outputs of queued or running requests at most (memory.request_bytes; BatcherBusy above);
    large_batch_output_pixels: batches above it run on the low-priority workers only (workers >= 2;
    None: 256 x 256).
    """

    def __init__(
        self,
        run_batch: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        max_batch_pixels: int | None = None,
        max_batch_output_pixels: int | None = None,
        scale: int = 1,
        max_key_pixels: int | None = None,
        workers: int = 1,
        max_inflight_bytes: int | None = None,
        large_batch_output_pixels: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.max_batch_pixels = max_batch_pixels
        self.max_batch_output_pixels = max_batch_output_pixels
        self.scale = scale
        self.max_key_pixels = max_key_pixels
        self.workers = workers
        self.max_inflight_bytes = max_inflight_bytes
        self.large_batch_output_pixels = large_batch_output_pixels or 256 * 256
        self._bytes = 0  # memory.request_bytes of the requests queued or running
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches ran at that size
        self.model_calls = 0  # batches handed to the model
        self.dropped = 0  # requests removed because their caller went away before the model ran
        self._queue: list[_Pending] = []
        self._inflight: Counter = Counter()  # key -> output pixels queued or running
        self._served: dict[Hashable, float] = {}  # key -> output pixels served (fair-share clock)
        self._vclock = 0.0  # served level of the last batch's lead when it started: where joining keys start
        self._leading: Counter = Counter()  # key -> running batches it leads
        self._running = 0
        self._busy: list[bool] = [False] * workers  # per worker lane; lane 0 is the normal-priority one
        self._tasks: set[asyncio.Task] = set()
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._lanes: list[ThreadPoolExecutor] = []

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the runner on the current event loop and the model worker threads."""
        if self._runner is not None:
            return
        self._wakeup = asyncio.Event()
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imgsteal-model{i}",
                                          initializer=lower_priority if i > 0 else None) for i in range(self.workers)]
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="imgsteal-batcher")

    async def stop(self, wait: bool = True) -> None:
        """Stop the runner; images still waiting fail with RuntimeError. wait=False: do not wait for a
        model call already running in a worker thread (it is abandoned; its thread ends when it returns)."""
        if self._runner is None:
            return
        self._runner.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in [self._runner, *self._tasks]:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._runner = None
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        for lane in self._lanes:
            lane.shutdown(wait=wait, cancel_futures=True)
        self._lanes = []

    @property
    def waiting(self) -> int:
        """Images queued and not yet handed to the model."""
        return len(self._queue)

    def inflight_pixels(self, key: Hashable) -> int:
        """Output pixels of `key` queued or running."""
        return self._inflight.get(key, 0)

    def output_pixels(self, image: torch.Tensor) -> int:
        return image.shape[-1] * image.shape[-2] * self.scale * self.scale

    def admits(self, key: Hashable, input_pixels: int = 1) -> bool:
        """Whether `key` may submit an image of `input_pixels` now (checked before reading or decoding it)."""
        held = self._inflight.get(key, 0)
        cost = input_pixels * self.scale * self.scale
        return self.max_key_pixels is None or not held or held + cost <= self.max_key_pixels

    def is_large(self, input_pixels: int) -> bool:
        """Whether an image of `input_pixels` is large work (runs, and should be coded, at low priority)."""
        return self._is_large(input_pixels * self.scale * self.scale)

    # -- requests -------------------------------------------------------------------------------
    async def submit(self, image: torch.Tensor, key: Hashable = None) -> torch.Tensor:
        """Queue one C x H x W image of `key`; returns the model's output for it.

        Raises KeyBusy when `key` has `max_key_pixels` in flight, BatcherBusy when the queue is full.
        Cancelling the caller before its batch starts removes the image: the model never sees it.
        """
        if self._runner is None or self._wakeup is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        cost = self.output_pixels(image)
        held = self._inflight.get(key, 0)
        if self.max_key_pixels is not None and held and held + cost > self.max_key_pixels:
            raise KeyBusy(f"{held} output pixels of this key are in flight (limit {self.max_key_pixels})")
        self._prune()
        if len(self._queue) >= self.max_queue:
            raise BatcherBusy(f"{len(self._queue)} images are waiting (max_queue {self.max_queue})")
        nbytes = request_bytes(image.shape[-1] * image.shape[-2], self.scale)
        if self.max_inflight_bytes is not None and self._bytes and self._bytes + nbytes > self.max_inflight_bytes:
            raise BatcherBusy(f"{self._bytes} bytes of requests are in flight (limit {self.max_inflight_bytes})")
        loop = asyncio.get_running_loop()
        if not any(p.key == key for p in self._queue):  # (re)joining: no credit from idle time
            self._served[key] = max(self._served.get(key, 0.0), self._vclock)
        pending = _Pending(image, loop.create_future(), loop.time(), key, cost, nbytes)
        self._queue.append(pending)
        self._inflight[key] += cost
        self._bytes += nbytes
        self._wakeup.set()
        try:
            return await pending.future
        finally:
            if pending in self._queue and pending.future.done():  # cancelled while waiting
                self._queue.remove(pending)
                self._release(pending)
                self.dropped += 1
                self._wakeup.set()

    def _release(self, p: _Pending) -> None:
        self._bytes -= p.nbytes
        self._inflight[p.key] -= p.cost
        if self._inflight[p.key] <= 0:
            del self._inflight[p.key]

    def _prune(self) -> None:
        """Drop requests whose caller went away."""
        live = []
        for p in self._queue:
            if p.future.done():
                self._release(p)
                self.dropped += 1
            else:
                live.append(p)
        self._queue = live

    # -- scheduling -----------------------------------------------------------------------------
    def _limit_ok(self, batch: list[_Pending], p: _Pending) -> bool:
        n = len(batch) + 1
        if n > self.max_batch:
            return False
        if self._free_lane(True) is None and self._is_large(n * p.cost):
            return False  # only the small-batch worker is free: stay small
        pixels = p.image.shape[-1] * p.image.shape[-2]
        if self.max_batch_pixels and n * pixels > self.max_batch_pixels:
            return False
        if self.max_batch_output_pixels and n * p.cost > self.max_batch_output_pixels:
            return False
        return True

    def _is_large(self, output_pixels: int) -> bool:
        return self.workers > 1 and output_pixels > self.large_batch_output_pixels

    def _free_lane(self, large: bool) -> int | None:
        """A free worker for a batch: small ones prefer lane 0 (normal priority), large ones never use it."""
        order = range(1, self.workers) if large else range(self.workers)
        return next((i for i in order if not self._busy[i]), None)

    def _lead(self) -> _Pending | None:
        """The oldest request of the least-served key that may lead a batch now, if any."""
        best = None
        for p in self._queue:
            if self.workers > 1 and self._leading.get(p.key, 0) > 0:
                continue  # one running batch per key: the other workers stay free for other keys
            if self._free_lane(self._is_large(p.cost)) is None:
                continue  # only the normal-priority worker is free, and this image is large
            rank = (self._served.get(p.key, 0.0), p.arrived)
            if best is None or rank < best[0]:
                best = (rank, p)
        return None if best is None else best[1]

    def _fill(self, lead: _Pending) -> list[_Pending]:
        """Requests of lead's size, least-served keys first, within the batch limits."""
        same = [p for p in self._queue if p.shape == lead.shape and p is not lead]
        same.sort(key=lambda p: (self._served.get(p.key, 0.0), p.arrived))
        batch = [lead]
        for p in same:
            if self._limit_ok(batch, p):
                batch.append(p)
        return batch

    def _full(self, lead: _Pending, batch: list[_Pending]) -> bool:
        """True when no further image of lead's size fits into `batch`."""
        return not self._limit_ok(batch, lead)

    async def _next_batch(self) -> list[_Pending]:
        """Wait for a free worker and work, then for the lead's batch to fill or time out."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            self._prune()
            lead = self._lead() if not all(self._busy) else None
            if lead is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._fill(lead)
            deadline = lead.arrived + self.max_wait_s
            while not self._full(lead, batch) and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._prune()
                if lead not in self._queue:
                    break
                batch = self._fill(lead)
            self._prune()
            if lead not in self._queue:
                continue
            batch = self._fill(lead)
            for p in batch:
                self._queue.remove(p)
            return batch

    def _forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.run_batch(torch.stack(images))

    async def _execute(self, batch: list[_Pending], lane: int) -> None:
        loop = asyncio.get_running_loop()
        lead_key = batch[0].key
        try:
            outputs = await loop.run_in_executor(self._lanes[lane], self._forward, [p.image for p in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"the model answered {len(outputs)} images for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(RuntimeError("the server is shutting down"))
            raise
        except Exception as exc:  # one failed batch fails its requests, not the service
            log.exception("model batch of %d failed", len(batch))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        else:
            self.batch_sizes[len(batch)] += 1
            for p, out in zip(batch, outputs):
                if not p.future.done():
                    p.future.set_result(out)
        finally:
            self._running -= 1
            self._busy[lane] = False
            self._leading[lead_key] -= 1
            if self._leading[lead_key] <= 0:
                del self._leading[lead_key]
            for p in batch:
                self._release(p)
            if self._wakeup is not None:
                self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self._vclock = max(self._vclock, self._served.get(batch[0].key, 0.0))  # the lead's start tag
            for p in batch:
                self._served[p.key] = self._served.get(p.key, 0.0) + p.cost
            lane = self._free_lane(self._is_large(sum(p.cost for p in batch)))
            assert lane is not None  # _next_batch only forms batches that have a worker
            self._busy[lane] = True
            self._running += 1
            self._leading[batch[0].key] += 1
            self.model_calls += 1
            task = loop.create_task(self._execute(batch, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def lower_priority() -> None:
    """Run this worker thread (and the threads it starts) at nice +10, where the OS allows it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: same priority as the rest
        pass
