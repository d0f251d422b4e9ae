"""Micro-batching: same-size requests share a model call; sizes never mix; failures stay contained."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from imgsteal.victim.batching import BatcherBusy, MicroBatcher


class RecordingModel:
    """Doubles its input; remembers each batch's shape. Optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail_first: bool = False) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.delay_s = delay_s
        self.fail_next = fail_first

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model exploded")
        return batch * 2


def run(coro):
    return asyncio.run(coro)


def images(n: int, size: int, offset: int = 0) -> list[torch.Tensor]:
    return [torch.full((3, size, size), float(offset + i)) for i in range(n)]


async def batched(model, inputs, **kwargs):
    batcher = MicroBatcher(model, **kwargs)
    await batcher.start()
    try:
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
    finally:
        await batcher.stop()
    return batcher, outputs


def test_concurrent_same_size_requests_run_as_one_batch():
    model = RecordingModel()
    inputs = images(8, 16)
    batcher, outputs = run(batched(model, inputs, max_batch=8, max_wait_ms=200))
    assert model.shapes == [(8, 3, 16, 16)]
    assert dict(batcher.batch_sizes) == {8: 1}
    for x, y in zip(inputs, outputs):
        assert torch.equal(y, x * 2)  # every caller gets its own image's answer


def test_sizes_never_mix_and_max_batch_holds():
    model = RecordingModel()
    inputs = images(7, 16) + images(4, 8, offset=100)
    _, outputs = run(batched(model, inputs, max_batch=3, max_wait_ms=50))
    assert sum(s[0] for s in model.shapes) == 11
    assert all(s[0] <= 3 for s in model.shapes)
    assert sorted({s[2] for s in model.shapes}) == [8, 16]
    for x, y in zip(inputs, outputs):
        assert torch.equal(y, x * 2)


def test_pixel_budget_splits_large_images():
    model = RecordingModel()
    run(batched(model, images(6, 16), max_batch=8, max_wait_ms=50, max_batch_pixels=2 * 16 * 16))
    assert all(s[0] <= 2 for s in model.shapes) and sum(s[0] for s in model.shapes) == 6


def test_a_lone_request_waits_only_max_wait():
    model = RecordingModel()

    async def one():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=30)
        await batcher.start()
        started = time.perf_counter()
        await batcher.submit(torch.zeros(3, 8, 8))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    elapsed = run(one())
    assert 0.025 <= elapsed < 1.0


def test_requests_arriving_during_a_batch_form_the_next_one():
    model = RecordingModel(delay_s=0.2)

    async def staggered():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=1)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(torch.zeros(3, 8, 8)))
        await asyncio.sleep(0.05)  # the first batch (1 image) is running now
        rest = [asyncio.ensure_future(batcher.submit(torch.ones(3, 8, 8))) for _ in range(5)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    run(staggered())
    assert [s[0] for s in model.shapes] == [1, 5]


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on():
    model = RecordingModel(fail_first=True)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=20)
        await batcher.start()
        first = await asyncio.gather(*(batcher.submit(x) for x in images(2, 8)), return_exceptions=True)
        second = await batcher.submit(torch.ones(3, 8, 8))
        await batcher.stop()
        return first, second

    first, second = run(scenario())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert torch.equal(second, torch.full((3, 8, 8), 2.0))


def test_full_queue_refuses_with_batcher_busy():
    model = RecordingModel(delay_s=0.3)

    async def flood():
        batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0, max_queue=2)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(torch.zeros(3, 4, 4))) for _ in range(2)]
        await asyncio.sleep(0.05)  # one is running, one waits
        tasks += [asyncio.ensure_future(batcher.submit(torch.zeros(3, 4, 4))) for _ in range(3)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return results

    results = run(flood())
    busy = [r for r in results if isinstance(r, BatcherBusy)]
    assert 1 <= len(busy) <= 2
    assert all(isinstance(r, torch.Tensor) for r in results if not isinstance(r, BatcherBusy))


def test_a_client_that_went_away_is_skipped():
    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=100)
        await batcher.start()
        gone = asyncio.ensure_future(batcher.submit(torch.zeros(3, 8, 8)))
        stays = asyncio.ensure_future(batcher.submit(torch.ones(3, 8, 8)))
        await asyncio.sleep(0.01)
        gone.cancel()
        out = await stays
        await batcher.stop()
        return out

    out = run(scenario())
    assert model.shapes == [(1, 3, 8, 8)] and torch.equal(out, torch.full((3, 8, 8), 2.0))


def test_submit_needs_start():
    with pytest.raises(RuntimeError):
        run(MicroBatcher(RecordingModel()).submit(torch.zeros(3, 4, 4)))
