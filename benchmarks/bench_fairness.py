"""Fairness under a flood: one key sends max-size images as fast as the server takes them, another
key's small requests must keep a p99 latency within 3x of their unloaded p99, and the server's peak
memory must stay under the bound it states at start-up.

The server runs in a subprocess on 127.0.0.1 (`imgsteal.victim.server.serve`, a random-init 4x
SRResNet on the CPU); the clients are httpx here. Phases: (1) idle: the small key alone sends
--small requests one after another; (2) flooded: --flood-clients connections of the flooding key
keep sending --flood-size images (answers of 429 are retried after a short pause) while the small
key sends the same --small requests again. Peak memory is the server's VmHWM.

    python benchmarks/bench_fairness.py                     # about a minute on 2 CPU cores
    python benchmarks/bench_fairness.py --compare           # also the same flood with one model worker and no per-key limit

Exit status 0 when p99(flooded) <= 3 x p99(idle) and peak memory <= the stated bound.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from imgsteal.data.images import encode_png
from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint
from imgsteal.victim.accounts import AccountsDB

SERVER = """
import sys
from imgsteal.victim.server import ServerSettings, serve
settings = ServerSettings.model_validate_json(sys.argv[3])
serve(sys.argv[1], sys.argv[2], settings, port=0, port_file=sys.argv[4], device="cpu")
"""


def image(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, side // 4 + 1, side // 4 + 1), dtype=np.float32))
    return encode_png(torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")[0])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def small_run(url: str, key: str, n: int, side: int, statuses: dict | None = None) -> list[float]:
    """`n` small requests one after another; latencies in ms of those answered 200 (statuses counted)."""
    data = [image(side, 1000 + i) for i in range(n)]
    latencies = []
    statuses = {} if statuses is None else statuses
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"}) as client:
        for body in data:
            t = time.perf_counter()
            r = client.post(f"{url}/v1/translate", content=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                latencies.append(1000 * (time.perf_counter() - t))
    return latencies


def flood(url: str, key: str, body: bytes, stop: threading.Event, counts: dict) -> None:
    with httpx.Client(timeout=300, headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"}) as client:
        while not stop.is_set():
            try:
                r = client.post(f"{url}/v1/translate", content=body)
            except httpx.TransportError:
                counts["errors"] = counts.get("errors", 0) + 1
                continue
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
            if r.status_code in (429, 503):
                time.sleep(0.05)


def run_case(model: Path, work: Path, settings: dict, args) -> dict:
    from imgsteal.victim.server import ServerSettings

    settings_json = ServerSettings(**settings).model_dump_json()
    db, port_file, log_path = work / "api.sqlite", work / "port", work / "server.log"
    port_file.unlink(missing_ok=True)
    with AccountsDB(db) as accounts:
        small_key = accounts.create_key(f"small-{time.monotonic_ns()}")[1]
        flood_key = accounts.create_key(f"flood-{time.monotonic_ns()}")[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(db), settings_json, str(port_file)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        stated = re.search(r"memory bound (\d+) MB", log_path.read_text())
        small_run(url, small_key, 5, args.small_size)  # warm-up
        small_statuses: dict = {}
        t0 = time.perf_counter()
        idle = small_run(url, small_key, args.small, args.small_size, small_statuses)
        t1 = time.perf_counter()
        stop, counts = threading.Event(), {}
        body = image(args.flood_size, 7)
        threads = [threading.Thread(target=flood, args=(url, flood_key, body, stop, counts)) for _ in range(args.flood_clients)]
        for t in threads:
            t.start()
        time.sleep(args.settle_s)  # the flood is running
        flooded = small_run(url, small_key, args.small, args.small_size, small_statuses)
        t2 = time.perf_counter()
        stop.set()
        for t in threads:
            t.join(timeout=300)
        peak_mb = status_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"idle": idle, "flooded": flooded, "flood": counts, "peak_mb": peak_mb, "small_statuses": small_statuses,
            "phase_s": (t1 - t0, t2 - t1),
            "bound_mb": float(stated.group(1)) if stated else None, "statement": log_path.read_text().splitlines()[:1]}


def report(name: str, r: dict) -> bool:
    p50_i, p99_i = statistics.median(r["idle"]), percentile(r["idle"], 0.99)
    p50_f, p99_f = statistics.median(r["flooded"]), percentile(r["flooded"], 0.99)
    ratio = p99_f / p99_i
    mem_ratio = r["peak_mb"] / r["bound_mb"] if r["bound_mb"] else float("nan")
    print(f"[{name}] {r['statement'][0] if r['statement'] else ''}")
    print(f"[{name}] small key, {len(r['idle'])} requests: idle p50 {p50_i:.1f} ms p99 {p99_i:.1f} ms | "
          f"flooded p50 {p50_f:.1f} ms p99 {p99_f:.1f} ms | p99 ratio {ratio:.2f} (goal <= 3)")
    print(f"[{name}] small key answers by status: {r['small_statuses']}; phases idle {r['phase_s'][0]:.0f} s, "
          f"flooded {r['phase_s'][1]:.0f} s")
    print(f"[{name}] flood answers by status: {dict(sorted(r['flood'].items(), key=str))}")
    print(f"[{name}] server peak memory {r['peak_mb']:.0f} MB, stated bound {r['bound_mb']:.0f} MB, "
          f"ratio {mem_ratio:.2f} (goal <= 1)")
    return ratio <= 3.0 and mem_ratio <= 1.0 and set(r["small_statuses"]) == {200}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-size", type=int, default=256, help="side of the flooding key's images (= --max-pixels)")
    parser.add_argument("--small-size", type=int, default=16)
    parser.add_argument("--small", type=int, default=60, help="small requests per phase")
    parser.add_argument("--flood-clients", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=1.0)
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--max-memory", type=float, default=None, help="the server's --max-memory, MB (default: derived)")
    parser.add_argument("--compare", action="store_true", help="also run with 1 model worker and no per-key limit")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        torch.manual_seed(0)
        generator = build_model("srresnet", scale=4, n_blocks=args.n_blocks, channels=args.channels)
        model = save_checkpoint(Path(tmp) / "model.safetensors", {"task": "sr", "scale": 4, "export": "generator",
                                "archs": {"generator": generator.build_spec}}, {"generator": generator})
        base = dict(rate_per_s=0, max_pixels=args.flood_size ** 2, max_body_bytes=2 * 1024 * 1024,
                    max_memory_mb=args.max_memory)
        print(f"SRResNet x4 ({args.n_blocks} blocks, {args.channels} ch) on CPU; flood: {args.flood_clients} clients "
              f"of one key sending {args.flood_size}x{args.flood_size}; small key: {args.small} x {args.small_size}x{args.small_size}")
        ok = report("fair", run_case(model, Path(tmp), base, args))
        if args.compare:
            unfair = dict(base, model_workers=1, max_key_pixels=10**12)
            report("one worker, no per-key limit", run_case(model, Path(tmp), unfair, args))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
