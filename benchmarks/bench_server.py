"""Inference API throughput at 16 concurrent clients vs the same model's in-process batched throughput.

Both runs use the same checkpoint, the same images and the same batch size, on this machine. The
in-process reference decodes the PNGs, runs the model in batches of --max-batch and encodes PNGs
(what the server does per request, minus HTTP); the model-only figure is printed too. The server
runs in a subprocess (`imgsteal serve`, no rate limit); the clients are asyncio + httpx here.

    python benchmarks/bench_server.py                      # paper-size SRResNet (16 blocks, 64 ch), 32 px inputs
    python benchmarks/bench_server.py --model runs/demo/sr/victim --size 48 --requests 256

Goal: server throughput >= 80% of the in-process batched throughput (with codec).
Rounds alternate the two measurements. On a machine busy with other jobs the server side (two
processes, more threads) gets a larger share of the CPU than the single in-process loop, so the
ratio is only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from imgsteal.data.images import decode_image, encode_png
from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint
from imgsteal.victim.inference import load_translator
from imgsteal.victim.launch import running_server


def make_inputs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """Distinct smooth random RGB images (size x size) as PNG bytes."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = torch.from_numpy(rng.random((1, 3, size // 4 + 1, size // 4 + 1), dtype=np.float32))
        image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
        images.append(encode_png(image))
    return images


def in_process(model_path: Path, inputs: list[bytes], batch: int) -> tuple[float, float]:
    """(images/s with PNG decode + encode, images/s of the model alone), batches of `batch`."""
    translator = load_translator(model_path, "cpu")
    translator(torch.stack([decode_image(d) for d in inputs[:batch]]))  # warm-up
    started = time.perf_counter()
    model_s = 0.0
    for i in range(0, len(inputs), batch):
        x = torch.stack([decode_image(d) for d in inputs[i : i + batch]])
        t = time.perf_counter()
        y = translator(x)
        model_s += time.perf_counter() - t
        for out in y:
            encode_png(out)
    total_s = time.perf_counter() - started
    return len(inputs) / total_s, len(inputs) / model_s


async def hammer(url: str, key: str, inputs: list[bytes], clients: int) -> tuple[float, list[float], list[int]]:
    """`clients` closed-loop clients share `inputs`; returns (wall s, latencies s, status codes)."""
    latencies: list[float] = []
    statuses: list[int] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in inputs:
        queue.put_nowait(data)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            data = queue.get_nowait()
            t = time.perf_counter()
            r = await http.post("/v1/translate", content=data, headers={"Content-Type": "image/png"})
            latencies.append(time.perf_counter() - t)
            statuses.append(r.status_code)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="victim checkpoint; default: a random-init SRResNet")
    parser.add_argument("--n-blocks", type=int, default=16)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input side, pixels")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3, help="alternating in-process / server measurements")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            generator = build_model("srresnet", scale=4, n_blocks=args.n_blocks, channels=args.channels)
            model = save_checkpoint(Path(tmp) / "model.safetensors", {"task": "sr", "scale": 4, "export": "generator",
                                    "archs": {"generator": generator.build_spec}}, {"generator": generator})
        inputs = make_inputs(args.requests, args.size)
        print(f"model {model}, {args.requests} requests of {args.size}x{args.size}, batch {args.max_batch}, "
              f"{args.clients} clients, torch threads {torch.get_num_threads()}")

        # Rounds alternate the two measurements so that load from other processes hits both alike.
        rows = []
        with running_server(model, Path(tmp) / "api.sqlite", rate_per_s=0, max_batch=args.max_batch,
                            max_wait_ms=args.max_wait_ms, max_queue=max(256, args.requests)) as server:
            key = server.create_key("bench")
            asyncio.run(hammer(server.url, key, inputs[: args.clients], args.clients))  # warm-up
            for round_ in range(args.rounds):
                ref_total, ref_model = in_process(model, inputs, args.max_batch)
                wall, latencies, statuses = asyncio.run(hammer(server.url, key, inputs, args.clients))
                served = len(inputs) / wall
                lat_ms = sorted(1000 * x for x in latencies)
                p50 = statistics.median(lat_ms)
                p99 = lat_ms[min(len(lat_ms) - 1, int(round(0.99 * (len(lat_ms) - 1))))]
                bad = sum(s != 200 for s in statuses)
                rows.append((ref_total, ref_model, served, p50, p99, bad))
                print(f"round {round_ + 1}: in-process batched {ref_total:7.2f} img/s with PNG codec ({ref_model:7.2f} model only)"
                      f" | server, {args.clients} clients {served:7.2f} img/s, latency p50 {p50:.0f} ms p99 {p99:.0f} ms"
                      + (f", NON-200: {bad}" if bad else ""))
        ref_total, ref_model, served, p50, p99 = (statistics.median(r[i] for r in rows) for i in range(5))
        bad = sum(r[5] for r in rows)
        print(f"median: in-process {ref_total:.2f} img/s (model only {ref_model:.2f}), server {served:.2f} img/s, "
              f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        ratio = served / ref_total
        print(f"ratio server / in-process (with codec): {ratio:.2f}   (vs model only: {served / ref_model:.2f})")
        print("goal >= 0.80:", "met" if ratio >= 0.8 and not bad else "NOT met")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
