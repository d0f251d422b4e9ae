"""Style-transfer training throughput vs a bare forward + backward loop (goal: ratio >= 0.90).

For pix2pix (the surrogate) and CycleGAN (the victim), the same networks and batch run twice in this
process: a bare loop calling the recipe's train_step on tensors already in memory, and the real
thing through `train_surrogate` / `train_style_victim` (images decoded once -> deterministic crops ->
recipe -> metrics log -> checkpoints -> progress bar). The ratio is what the data pipeline and the
bookkeeping cost. Rounds are interleaved and the best of each kept, since other load on a shared
machine hits both sides alike. On CUDA the recipes use autocast and channels-last; the benchmark also
times the bare loop in plain float32 to show whether they help.

    python benchmarks/bench_style_training.py [--size 64 --batch 4 --ngf 16 --steps 30 --rounds 3 --device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
from imgsteal.data.images import encode_png, save_image
from imgsteal.data.pairs import PairStore
from imgsteal.device import pick_device
from imgsteal.models import build_model
from imgsteal.train.pix2pix import Pix2PixRecipe
from imgsteal.victim.style import StyleVictimConfig, build_style_recipe, train_style_victim


def make_store(root: Path, count: int, size: int) -> None:
    """A pair store of `count` random size x size pairs (answer = inverted query)."""
    gen = torch.Generator().manual_seed(0)
    with PairStore(root) as store:
        for _ in range(count):
            x = torch.rand(3, size, size, generator=gen)
            store.add(encode_png(x), encode_png(1 - x), source=None, input_size=(size, size), output_size=(size, size), cost_usd=0.0)


def make_domain(folder: Path, count: int, size: int, seed: int) -> None:
    """`count` random size x size PNGs in `folder`."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        save_image(torch.rand(3, size, size, generator=gen), folder / f"{i:03d}.png")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(recipe, batch, steps: int, device: torch.device) -> float:
    """Images per second of `steps` train_step calls on one in-memory batch (after one warm-up step)."""
    recipe.begin_epoch(0)
    recipe.train_step(batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        recipe.train_step(batch)
    _sync(device)
    return steps * len(batch[0]) / (time.perf_counter() - start)


def bare_pix2pix(args, device: torch.device, amp: bool | None = None) -> float:
    """Images/s of the bare pix2pix loop (amp None: the recipe's default for the device)."""
    torch.manual_seed(0)
    recipe = Pix2PixRecipe(build_model("unet", ngf=args.ngf, image_size=args.size),
                           build_model("patchgan", in_channels=6, ndf=args.ngf), device, epochs=1,
                           amp=amp, channels_last=amp)
    batch = (torch.rand(args.batch, 3, args.size, args.size), torch.rand(args.batch, 3, args.size, args.size))
    return timed_steps(recipe, batch, args.steps, device)


def style_cfg(args, tmp: Path, device: str) -> StyleVictimConfig:
    """The CycleGAN victim config both sides use."""
    return StyleVictimConfig(arch="cyclegan", domain_a=str(tmp / "a"), domain_b=str(tmp / "b"), size=args.size,
                             epochs=args.epochs, batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, device=device,
                             checkpoint_every=10_000)


def bare_cyclegan(args, tmp: Path, device: torch.device, amp: bool | None = None) -> float:
    """Images/s of the bare CycleGAN loop (amp None: the recipe's default for the device)."""
    torch.manual_seed(0)
    cfg = style_cfg(args, tmp, str(device)).model_copy(update={"amp": amp, "channels_last": amp})
    recipe = build_style_recipe(cfg, device)
    batch = (torch.rand(args.batch, 3, args.size, args.size), torch.rand(args.batch, 3, args.size, args.size))
    return timed_steps(recipe, batch, args.steps, device)


def main() -> int:
    """Run the interleaved rounds, print the ratios; exit 0 when both reach 0.90."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed run (an epoch is steps / epochs)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per real run: a checkpoint is written at each end")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    per_epoch = max(1, args.steps // args.epochs)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_store(tmp / "pairs", count=per_epoch * args.batch, size=args.size)
        # Domain A holds the larger set, which fixes the epoch length; images are larger than the crops.
        load = round(args.size * 286 / 256) + 4
        make_domain(tmp / "a", per_epoch * args.batch, load, seed=1)
        make_domain(tmp / "b", max(2, per_epoch * args.batch // 2), load, seed=2)
        p2p_cfg = SurrogateConfig(store=str(tmp / "pairs"), arch="pix2pix", size=args.size, channels=args.ngf,
                                  epochs=args.epochs, batch_size=args.batch, device=str(device), checkpoint_every=10_000)
        bare = {"pix2pix": 0.0, "cyclegan": 0.0}
        real = {"pix2pix": 0.0, "cyclegan": 0.0}
        for round_ in range(args.rounds):
            bare["pix2pix"] = max(bare["pix2pix"], bare_pix2pix(args, device))
            real["pix2pix"] = max(real["pix2pix"], train_surrogate(p2p_cfg, tmp / f"p2p{round_}", progress=True).images_per_second)
            bare["cyclegan"] = max(bare["cyclegan"], bare_cyclegan(args, tmp, device))
            result = train_style_victim(style_cfg(args, tmp, str(device)), tmp / f"cyc{round_}", progress=True)
            real["cyclegan"] = max(real["cyclegan"], result.images_per_second)
        for name in bare:
            results[name] = (bare[name], real[name])
        fp32 = {}
        if device.type == "cuda":
            fp32 = {"pix2pix": bare_pix2pix(args, device, amp=False), "cyclegan": bare_cyclegan(args, tmp, device, amp=False)}
    print(f"\ndevice {device}, {args.size} px, batch {args.batch}, ngf {args.ngf}, {args.steps} steps, best of {args.rounds}")
    ok = True
    for name, (b, r) in results.items():
        ratio = r / b
        ok &= ratio >= 0.9
        print(f"{name:9s} bare forward+backward loop: {b:8.1f} img/s   run_training: {r:8.1f} img/s   ratio {ratio:5.3f}  (goal >= 0.90)")
        if name in fp32:
            print(f"{'':9s} bare loop in float32, contiguous: {fp32[name]:8.1f} img/s   autocast + channels-last speed-up x{b / fp32[name]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
