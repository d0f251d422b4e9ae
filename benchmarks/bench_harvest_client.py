"""The harvest client's own cost per query, against a server that only echoes the image back.

With no model behind the API, what remains per query is the client: reading and PNG-encoding the
input, hashing, HTTP, decoding the answer and committing the pair to the store. Printed:

  raw httpx        concurrent POSTs of ready bytes, nothing else (the floor for this machine)
  HttpOracle       the oracle alone on ready bytes (thread hand-off, retries logic, queues)
  harvest()        the whole harvest: files -> PairStore (atomic renames, WAL commits)

as wall ms per query at --concurrency, and client CPU ms per query (this process, all threads).
Goal: the harvest client's overhead below 5 ms per query.

    python benchmarks/bench_harvest_client.py [--queries 300] [--concurrency 8] [--size 64] [--torch-threads 1]

On a busy machine torch's intra-op threads make the per-image tensor work of harvest() (PNG encode
of the query) slow to wake up; --torch-threads 1 shows the client without that effect.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def serve_routes(routes: list, port_file: Path) -> None:
    """Serve Starlette `routes` on a free 127.0.0.1 port, written to `port_file` once bound."""
    import os
    import socket

    import uvicorn
    from starlette.applications import Starlette

    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    os.replace(tmp, port_file)
    uvicorn.Server(uvicorn.Config(Starlette(routes=routes), log_level="warning", access_log=False)).run(sockets=[sock])


def start_server(script: str, flag: str, work: Path) -> tuple[subprocess.Popen, str]:
    """Run `python script flag PORT_FILE` (a benchmark's own mock server) and wait until /healthz answers."""
    port_file = work / f"{flag.strip('-')}.port"
    process = subprocess.Popen([sys.executable, script, flag, str(port_file)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the benchmark's server ({flag}) did not start")


def serve_echo(port_file: Path) -> None:
    """A minimal API that answers every image with itself (no auth, no model)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def translate(request: Request) -> Response:
        return Response(await request.body(), media_type="image/png")

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"task": "echo", "scale": 1})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    serve_routes([Route("/v1/translate", translate, methods=["POST"]), Route("/v1/info", info),
                  Route("/healthz", healthz)], port_file)


def write_inputs(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        path = folder / f"x{i:04d}.png"
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(path)
        paths.append(path)
    return paths


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def raw_posts(url: str, path: str, bodies: list[bytes], concurrency: int, headers: dict[str, str]) -> None:
    """POST ready bodies to url+path with `concurrency` workers; read each answer, decode nothing."""
    async def run() -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                r = await client.post(path, content=queue.get_nowait(), headers=headers)
                r.raise_for_status()

        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency)) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))

    asyncio.run(run())


def raw_httpx(url: str, bodies: list[bytes], concurrency: int) -> None:
    raw_posts(url, "/v1/translate", bodies, concurrency, {"Content-Type": "image/png"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="input side, pixels")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads in this client (default: torch's)")
    parser.add_argument("--serve-echo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from imgsteal.attack.harvest import harvest, prepare_query
    from imgsteal.attack.http_oracle import HttpOracle
    from imgsteal.data.pairs import PairStore

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_inputs(work / "inputs", args.queries, args.size)
        bodies = [prepare_query(p, None)[0] for p in paths]
        process, url = start_server(__file__, "--serve-echo", work)
        try:
            raw_httpx(url, bodies[: args.concurrency * 2], args.concurrency)  # warm-up
            results = {}
            results["raw httpx"] = timed(lambda: raw_httpx(url, bodies, args.concurrency))

            def oracle_only() -> None:
                with HttpOracle(url, concurrency=args.concurrency) as oracle:
                    answers = list(oracle.stream(enumerate(bodies)))
                assert all(a.image is not None for a in answers)

            results["HttpOracle"] = timed(oracle_only)

            def full_harvest() -> None:
                with HttpOracle(url, concurrency=args.concurrency) as oracle, PairStore(work / "pairs") as store:
                    report = harvest(oracle, paths, store, progress=False)
                assert report.queried == len(paths), report

            results["harvest()"] = timed(full_harvest)

            def store_only() -> None:  # what the store's no-loss writes cost alone, for the breakdown
                with PairStore(work / "store-only") as store:
                    for body in bodies:
                        store.add(body, body, source=None, input_size=(args.size, args.size),
                                  output_size=(args.size, args.size), cost_usd=0.0)

            results["PairStore.add"] = timed(store_only)
        finally:
            process.terminate()
            process.wait()

    n = args.queries
    print(f"{n} queries of {args.size}x{args.size} PNG ({sum(map(len, bodies)) / n / 1024:.1f} KiB each) "
          f"to an echo server, concurrency {args.concurrency}, torch threads {torch.get_num_threads()}")
    print(f"{'':12} {'wall ms/query':>14} {'client CPU ms/query':>20}")
    for name, (wall, cpu) in results.items():
        print(f"{name:12} {1000 * wall / n:14.2f} {1000 * cpu / n:20.2f}")
    ms = {name: (1000 * wall / n, 1000 * cpu / n) for name, (wall, cpu) in results.items()}
    oracle_cpu = ms["HttpOracle"][1]
    oracle_extra_wall = ms["HttpOracle"][0] - ms["raw httpx"][0]
    print(f"HttpOracle client overhead: {oracle_cpu:.2f} ms CPU/query, {oracle_extra_wall:+.2f} ms wall/query over raw httpx"
          f" (goal < 5 ms): {'met' if oracle_cpu < 5 and oracle_extra_wall < 5 else 'NOT met'}")
    # The whole harvest client's overhead: what it adds to the bare HTTP round trip (wall), and the
    # CPU it burns per query; the echo server's own time is in both sides of the wall difference.
    harvest_cpu = ms["harvest()"][1]
    harvest_extra_wall = ms["harvest()"][0] - ms["raw httpx"][0]
    print(f"harvest() client overhead: {harvest_cpu:.2f} ms CPU/query, {harvest_extra_wall:+.2f} ms wall/query over raw httpx"
          f" (goal < 5 ms): {'met' if harvest_cpu < 5 and harvest_extra_wall < 5 else 'NOT met'};"
          f" PairStore.add alone: {ms['PairStore.add'][0]:.2f} ms/query")
    return 0 if oracle_cpu < 5 and harvest_cpu < 5 and harvest_extra_wall < 5 else 1

if __name__ == "__main__":
    sys.exit(main())
