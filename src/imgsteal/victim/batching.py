"""Dynamic micro-batching: concurrent requests of the same image size run as one model call.

`MicroBatcher.submit(image)` queues a 3 x H x W tensor and resolves to the model's answer for it.
One runner coroutine takes the oldest waiting size group, waits until the group holds `max_batch`
images or its first image has waited `max_wait_ms`, and runs the batch in a single worker thread, so
the model sees one batch at a time and the event loop stays free. Images that arrive while a batch
runs wait for the next one: under load, batches fill up by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)


class BatcherBusy(RuntimeError):
    """More images are waiting than the queue allows; the caller should answer 503 and retry later."""


@dataclass
class _Pending:
    image: torch.Tensor
    future: asyncio.Future
    arrived: float  # loop.time(), seconds


class MicroBatcher:
    """Group same-size images into batches for `run_batch` (N x C x H x W -> N x C' x H' x W').

    max_batch: images per model call at most; max_wait_ms: how long the first image of a group may
    wait for company; max_queue: images waiting at most (beyond that submit raises BatcherBusy);
    max_batch_pixels: input pixels per batch at most (large images run in smaller batches; >= 1 image).
    """

    def __init__(
        self,
        run_batch: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        max_batch_pixels: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.max_batch_pixels = max_batch_pixels
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches ran at that size
        self._groups: dict[tuple[int, ...], list[_Pending]] = {}
        self._waiting = 0
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the runner on the current event loop and the model worker thread."""
        if self._runner is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsteal-model")
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="imgsteal-batcher")

    async def stop(self) -> None:
        """Stop the runner; images still waiting fail with RuntimeError."""
        if self._runner is None:
            return
        self._runner.cancel()
        try:
            await self._runner
        except asyncio.CancelledError:
            pass
        self._runner = None
        for group in self._groups.values():
            for p in group:
                if not p.future.done():
                    p.future.set_exception(RuntimeError("the server is shutting down"))
        self._groups.clear()
        self._waiting = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def waiting(self) -> int:
        """Images queued and not yet handed to the model."""
        return self._waiting

    # -- requests -------------------------------------------------------------------------------
    async def submit(self, image: torch.Tensor) -> torch.Tensor:
        """Queue one C x H x W image; returns the model's output for it. Raises BatcherBusy when full."""
        if self._runner is None or self._wakeup is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self._waiting >= self.max_queue:
            raise BatcherBusy(f"{self._waiting} images are waiting (max_queue {self.max_queue})")
        loop = asyncio.get_running_loop()
        pending = _Pending(image, loop.create_future(), loop.time())
        self._groups.setdefault(tuple(image.shape), []).append(pending)
        self._waiting += 1
        self._wakeup.set()
        return await pending.future

    def _limit(self, shape: tuple[int, ...]) -> int:
        if not self.max_batch_pixels:
            return self.max_batch
        pixels = shape[-1] * shape[-2]
        return max(1, min(self.max_batch, self.max_batch_pixels // max(pixels, 1)))

    def _prune(self, shape: tuple[int, ...]) -> list[_Pending]:
        """Drop requests whose client went away; remove the group when empty."""
        group = self._groups[shape]
        live = [p for p in group if not p.future.done()]
        self._waiting -= len(group) - len(live)
        if live:
            self._groups[shape] = live
        else:
            del self._groups[shape]
        return live

    async def _next_batch(self) -> list[_Pending]:
        """Wait for work, then for the oldest group to fill or time out; take up to its limit."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._groups:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            shape = min(self._groups, key=lambda s: self._groups[s][0].arrived)
            group = self._prune(shape)
            if not group:
                continue
            limit = self._limit(shape)
            deadline = group[0].arrived + self.max_wait_s
            while len(group) < limit and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                group = self._groups.get(shape, [])
            group = self._prune(shape) if shape in self._groups else []
            if not group:
                continue
            take = group[:limit]
            rest = group[limit:]
            if rest:
                self._groups[shape] = rest
            else:
                del self._groups[shape]
            self._waiting -= len(take)
            return take

    def _forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.run_batch(torch.stack(images))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            take = await self._next_batch()
            try:
                outputs = await loop.run_in_executor(self._executor, self._forward, [p.image for p in take])
                if len(outputs) != len(take):
                    raise RuntimeError(f"the model answered {len(outputs)} images for a batch of {len(take)}")
            except asyncio.CancelledError:
                for p in take:
                    if not p.future.done():
                        p.future.set_exception(RuntimeError("the server is shutting down"))
                raise
            except Exception as exc:  # one failed batch fails its requests, not the service
                log.exception("model batch of %d failed", len(take))
                for p in take:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batch_sizes[len(take)] += 1
            for p, out in zip(take, outputs):
                if not p.future.done():
                    p.future.set_result(out)
