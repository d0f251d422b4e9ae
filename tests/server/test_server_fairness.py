"""Fair sharing between keys and the memory budget (issue 16 item 4), at the batcher level.

The end-to-end numbers (small key's p50/p99 idle vs flooded, peak memory) come from
benchmarks/bench_fairness.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from imgsteal.victim.batching import BatcherBusy, KeyBusy, MicroBatcher
from imgsteal.victim.memory import MB, plan_memory, request_bytes


class TimedModel:
    """Sleeps in proportion to the batch's pixels; records (thread, shape, start, end) per call."""

    def __init__(self, s_per_mpx: float = 2.0) -> None:
        self.s_per_mpx = s_per_mpx
        self.calls: list[tuple[tuple[int, ...], float, float]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        time.sleep(self.s_per_mpx * batch[:, 0].numel() / 1e6)
        with self.lock:
            self.calls.append((tuple(batch.shape), start, time.perf_counter()))
        return batch.clone()


def test_a_flooding_key_cannot_starve_a_small_one():
    model = TimedModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=2, workers=2, max_key_pixels=2 * 256 * 256)
        await batcher.start()
        big = torch.zeros(3, 256, 256)  # 0.13 s per model call
        flood = [asyncio.ensure_future(batcher.submit(big, key="flood")) for _ in range(6)]
        await asyncio.sleep(0.01)
        small_latency = []
        for _ in range(5):
            t = time.perf_counter()
            await batcher.submit(torch.zeros(3, 16, 16), key="small")
            small_latency.append(time.perf_counter() - t)
        results = await asyncio.gather(*flood, return_exceptions=True)
        await batcher.stop()
        return small_latency, results

    small_latency, results = asyncio.run(scenario())
    busy = [r for r in results if isinstance(r, KeyBusy)]
    assert len(busy) == 4  # two max-size answers in flight per key; the rest refused (429)
    assert max(small_latency) < 0.1, small_latency  # never behind a 0.13 s flood batch
    big_calls = [c for c in model.calls if c[0][-1] == 256]
    for i, a in enumerate(big_calls):  # and one flood batch at a time: the second worker stays free
        for b in big_calls[i + 1:]:
            assert a[2] <= b[1] + 1e-3 or b[2] <= a[1] + 1e-3


def test_least_served_key_leads_the_next_batch():
    order = []

    def model(batch):
        order.append(batch[0, 0, 0, 0].item())
        time.sleep(0.05)
        return batch

    async def scenario():
        batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0, workers=1)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(torch.full((3, 8, 8), 1.0), key="a")) for _ in range(4)]
        await asyncio.sleep(0.01)  # a's first image runs; three more of a wait
        tasks += [asyncio.ensure_future(batcher.submit(torch.full((3, 8, 8), 2.0), key="b")) for _ in range(2)]
        await asyncio.gather(*tasks)
        await batcher.stop()

    asyncio.run(scenario())
    assert order == [1.0, 2.0, 1.0, 2.0, 1.0, 1.0]  # b does not wait behind all of a's queue


def test_batches_are_bounded_by_output_pixels_and_scale():
    shapes = []

    def model(batch):
        shapes.append(tuple(batch.shape))
        return batch.repeat_interleave(2, -1).repeat_interleave(2, -2)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=50, scale=2, max_batch_output_pixels=3 * 4 * 16 * 16)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(torch.zeros(3, 16, 16), key=i) for i in range(7)))
        await batcher.stop()

    asyncio.run(scenario())
    assert max(s[0] for s in shapes) == 3 and sum(s[0] for s in shapes) == 7


def test_in_flight_bytes_are_bounded():
    async def scenario():
        gate = threading.Event()
        batcher = MicroBatcher(lambda b: (gate.wait(5), b)[1], max_wait_ms=0, max_inflight_bytes=2 * request_bytes(64 * 64, 1))
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(torch.zeros(3, 64, 64), key=i)) for i in range(2)]
        await asyncio.sleep(0.02)
        with pytest.raises(BatcherBusy):
            await batcher.submit(torch.zeros(3, 64, 64), key=9)
        gate.set()
        await asyncio.gather(*tasks)
        await batcher.stop()

    asyncio.run(scenario())


def test_memory_plan_states_a_bound_within_the_budget_or_refuses():
    kwargs = dict(baseline=300 * MB, activation_per_px=100.0, workers=2, max_pixels=512 * 512, scale=4,
                  max_body_bytes=8 * MB, max_connections=64)
    plan = plan_memory(max_memory_bytes=4096 * MB, **kwargs)
    assert plan.bound <= 4096 * MB and plan.max_batch_output_pixels >= 512 * 512 * 16
    assert "memory bound" in plan.describe() and "--max-memory 4096 MB" in plan.describe()
    with pytest.raises(ValueError, match="give at least"):
        plan_memory(max_memory_bytes=1024 * MB, **kwargs)
    auto = plan_memory(max_memory_bytes=None, **kwargs)
    assert auto.max_batch_output_pixels == 512 * 512 * 16 and auto.bound > auto.baseline


def test_the_server_states_its_memory_bound_and_refuses_a_budget_too_small(tmp_path):
    from imgsteal.errors import ImgstealError
    from imgsteal.victim.inference import Translator
    from imgsteal.victim.server import ServerSettings, create_app

    translator = Translator(torch.nn.Upsample(scale_factor=2, mode="nearest"), kind="sr", scale=2)
    app = create_app(translator, tmp_path / "a.sqlite", ServerSettings(max_pixels=64 * 64, max_memory_mb=4096))
    service = app.state.service
    assert service.memory.bound <= 4096 * MB and "memory bound 4096 MB" in service.memory.describe()
    assert service.batcher.max_batch_output_pixels == service.memory.max_batch_output_pixels >= 4 * 64 * 64
    assert service.batcher.max_key_pixels == 2 * 4 * 64 * 64
    with pytest.raises(ImgstealError, match="cannot hold one request"):
        create_app(translator, tmp_path / "b.sqlite", ServerSettings(max_memory_mb=1))
