"""Training throughput of the attack recipes vs a bare forward + backward loop (goal: ratio >= 0.90).

For each new recipe (domain-shift and few-shot, super-resolution and style), the same networks and
batch shape run twice in this process: a bare loop calling the recipe's own train_step on tensors
already in memory (so SAM's second pass and the wavelet transform are in both), and the real thing
through `train_surrogate` (pair store -> crops -> recipe -> metrics log -> checkpoints -> progress).
The ratio is what the data pipeline and the bookkeeping cost. It also prints, for information, each
recipe's step time relative to the `paper` recipe on the same networks: the method's own price
(domain-shift's SAM step costs two forward/backward passes of the network it is applied to).
Few-shot runs with one crop scale here (crop_zooms 1.0) so its batches have a fixed size; with
several scales a batch holds about the same number of pixels.

    python benchmarks/bench_attack_recipes.py [--steps 40 --rounds 3 --device cpu --clock wall|cpu|either]
        [--only sr:domain-shift,sr:few-shot,style:domain-shift,style:few-shot]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from imgsteal.attack.methods import build_recipe, build_source
from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
from imgsteal.data.images import encode_png
from imgsteal.data.pairs import PairStore
from imgsteal.device import pick_device

CASES = ("sr:domain-shift", "sr:few-shot", "style:domain-shift", "style:few-shot")


def make_store(root: Path, kind: str, count: int, size: int) -> None:
    """`count` random pairs: 4x bicubic answers of size-px queries (sr), or inverted size-px images (style)."""
    gen = torch.Generator().manual_seed(0)
    with PairStore(root) as store:
        for _ in range(count):
            x = torch.rand(3, size, size, generator=gen)
            y = F.interpolate(x[None], scale_factor=4, mode="bicubic")[0].clamp(0, 1) if kind == "sr" else 1 - x
            store.add(encode_png(x), encode_png(y), source=None, input_size=(size, size),
                      output_size=tuple(y.shape[-2:]), cost_usd=0.0)


def config(kind: str, attack: str, store: Path, args: argparse.Namespace) -> SurrogateConfig:
    common = dict(store=str(store), attack=attack, steps=args.steps, device=args.device, checkpoint_every=200,
                  crop_zooms=(1.0,))
    if kind == "sr":
        return SurrogateConfig(arch="srresnet", batch_size=args.batch, patch=args.patch, n_blocks=args.blocks,
                               channels=args.channels, **common)
    return SurrogateConfig(arch="pix2pix", batch_size=args.style_batch, size=args.size, channels=args.ngf, **common)


def _sync(cfg: SurrogateConfig) -> None:
    if torch.cuda.is_available() and cfg.device != "cpu":
        torch.cuda.synchronize()


def bare_loop(cfg: SurrogateConfig, scale: int, batch: tuple[torch.Tensor, torch.Tensor], steps: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of cfg's recipe's train_step on one in-memory
    batch, repeated `steps` times after one warm-up step."""
    torch.manual_seed(0)
    recipe, _ = build_recipe(cfg, scale, pick_device(cfg.device), epochs=1, total_steps=steps + 1)
    recipe.train_step(batch)  # warm-up
    _sync(cfg)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        recipe.train_step(batch)
    _sync(cfg)
    images = steps * len(batch[0])
    return images / (time.perf_counter() - wall), images / max(time.process_time() - cpu, 1e-9)


def real_training(cfg: SurrogateConfig, run_dir: Path, batch_images: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of train_surrogate between the end of its first
    step (the warm-up, as in the bare loop) and the end of its last; checkpoints, logs and batch
    making in between count. CPU time counts every thread of the process (the checkpoint writer too),
    so it is robust to other processes sharing the cores, which wall time is not."""
    marks: dict[int, tuple[float, float]] = {}

    def on_step(step: int) -> None:
        if step in (1, cfg.steps):
            _sync(cfg)
            marks[step] = (time.perf_counter(), time.process_time())

    train_surrogate(cfg, run_dir, progress=False, on_step=on_step)
    images = (cfg.steps - 1) * batch_images
    (w0, c0), (w1, c1) = marks[1], marks[cfg.steps]
    return images / (w1 - w0), images / max(c1 - c0, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=24)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--style-batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--clock", choices=("wall", "cpu", "either"), default="wall",
                    help="which ratio judges the goal: wall time (idle machine), CPU time (shared machine)")
    args = ap.parse_args()
    cases = [c for c in args.only.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            kind, attack = case.split(":")
            store = Path(tmp) / f"pairs-{kind}"
            if not store.exists():
                make_store(store, kind, count=16, size=48 if kind == "sr" else args.size)
            cfg = config(kind, attack, store, args)
            scale = 4 if kind == "sr" else 1
            with PairStore(store, create=False) as s:
                from imgsteal.attack.surrogate import load_pairs

                inputs, targets, _ = load_pairs(s, 1.0, 0)
            batch = build_source(cfg, inputs, targets, scale, steps_per_epoch=1).batch(0, 0)
            paper = cfg.model_copy(update={"attack": "paper"})
            bare = real = bare_cpu = real_cpu = paper_cpu = 0.0
            for round_ in range(args.rounds):  # interleaved, best of each
                wall, cpu = bare_loop(cfg, scale, batch, args.steps - 1)
                bare, bare_cpu = max(bare, wall), max(bare_cpu, cpu)
                paper_cpu = max(paper_cpu, bare_loop(paper, scale, batch, args.steps - 1)[1])
                wall, cpu = real_training(cfg, Path(tmp) / f"run-{kind}-{attack}-{round_}", len(batch[0]))
                real, real_cpu = max(real, wall), max(real_cpu, cpu)
            ratio, ratio_cpu = real / bare, real_cpu / bare_cpu
            ok &= max(ratio, ratio_cpu) >= 0.9 if args.clock == "either" else (ratio_cpu if args.clock == "cpu" else ratio) >= 0.9
            rows.append((case, bare, real, ratio, ratio_cpu, paper_cpu / bare_cpu))
    print(f"{'recipe':20s} {'bare img/s':>10s} {'train img/s':>11s} {'ratio':>6s} {'CPU-time ratio':>14s}  {'step cost vs paper':>18s}")
    for case, bare, real, ratio, ratio_cpu, cost in rows:
        print(f"{case:20s} {bare:10.1f} {real:11.1f} {ratio:6.3f} {ratio_cpu:14.3f}  {cost:17.2f}x")
    print(f"goal: ratio >= 0.90 for every recipe (judged on {args.clock} time)" + ("" if ok else "  -- MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
