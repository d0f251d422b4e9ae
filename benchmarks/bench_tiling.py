"""Tiled vs untiled super-resolution on a DIV2K-size input (2040 x 1356): time and peak memory.

    python benchmarks/bench_tiling.py [--arch rrdbnet|msrresnet] [--channels 8] [--blocks 1]
        [--tile 256] [--overlap 16] [--memory-mb M] [--device cpu|cuda] [--repeats 1]

Each mode runs in its own child process, so its peak memory is its own: peak RSS growth on the CPU
(resource.getrusage), torch.cuda.max_memory_allocated on CUDA. The network is random-initialised
(speed and memory do not depend on the weights); the defaults are a small RRDBNet so that the
untiled pass fits a small CPU machine (its 8160 x 5424 output alone is 0.5 GB). On a GPU, try the
ESRGAN size: --arch rrdbnet --channels 64 --blocks 23. Prints both modes, the ratios, and the largest
difference between tiled and untiled outputs away from the tile seams. Exit status 1 if that
difference exceeds 1/255 or the tiled peak is not below the untiled one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

H, W = 1356, 2040


def _child(args: argparse.Namespace) -> None:
    import torch

    from imgsteal.models import build_model
    from imgsteal.victim.inference import Translator
    from imgsteal.victim.tiling import TilingConfig

    torch.manual_seed(0)
    kwargs = dict(channels=args.channels, n_blocks=args.blocks)
    if args.arch == "rrdbnet":
        kwargs["growth"] = max(4, args.channels // 2)
    net = build_model(args.arch, **kwargs)
    device = torch.device(args.device)
    tiling = None if args.mode == "untiled" else TilingConfig(tile=args.tile, overlap=args.overlap, above_pixels=0,
                                                              memory_mb=args.memory_mb)
    translator = Translator(net, "sr", scale=4, device=device, tiling=tiling)
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, H // 16, W // 16, generator=g), size=(H, W), mode="bicubic").clamp(0, 1)
    if device.type == "cuda":
        translator(x[..., :64, :64])  # warm-up: kernels and allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        y = translator(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB -> MiB on Linux
    torch.save(y.to(torch.float16), args.out)
    tile = translator.tile_side() if tiling else None
    print(json.dumps({"seconds": best, "peak_mib": peak, "tile": tile}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["rrdbnet", "msrresnet"], default="rrdbnet")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--tile", type=int, default=256, help="tile side in input px")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--memory-mb", type=float, default=None, help="pick the tile from this bound instead of --tile")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiled-only", action="store_true", help="skip the untiled run (no ratios, no comparison)")
    parser.add_argument("--mode", choices=["tiled", "untiled"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args)
        return 0

    import tempfile

    import torch

    results = {}
    output_mib = 3 * 4 * H * W * 16 / 2**20  # the assembled float32 output image
    with tempfile.TemporaryDirectory() as tmp:
        for mode in (("tiled",) if args.tiled_only else ("untiled", "tiled")):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode, "--out", f"{tmp}/{mode}.pt"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 2
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        if args.tiled_only:
            t = results["tiled"]
            print(f"tiled (tile {t['tile']}, overlap {args.overlap}): {t['seconds']:.2f} s, peak {t['peak_mib']:.0f} MiB "
                  f"({t['peak_mib'] - output_mib:.0f} MiB besides the {output_mib:.0f} MiB output image"
                  + (f"; bound {args.memory_mb:g} MiB)" if args.memory_mb else ")"))
            return 0
        untiled = torch.load(f"{tmp}/untiled.pt").float()
        tiled = torch.load(f"{tmp}/tiled.pt").float()
    tile = results["tiled"]["tile"]
    diff = (tiled - untiled).abs()[0].amax(0)
    mask = torch.ones_like(diff, dtype=torch.bool)
    margin = 16  # output px (4 input px) on each side of a seam
    for seam in range(tile * 4, diff.shape[0], tile * 4):
        mask[seam - margin: seam + margin] = False
    for seam in range(tile * 4, diff.shape[1], tile * 4):
        mask[:, seam - margin: seam + margin] = False
    u, t = results["untiled"], results["tiled"]
    print(f"input {W} x {H} -> {W * 4} x {H * 4}, {args.arch} channels={args.channels} blocks={args.blocks}, "
          f"device {args.device}")
    print(f"untiled: {u['seconds']:.2f} s, peak {u['peak_mib']:.0f} MiB")
    print(f"tiled (tile {tile}, overlap {args.overlap}): {t['seconds']:.2f} s, peak {t['peak_mib']:.0f} MiB "
          f"({t['peak_mib'] - output_mib:.0f} MiB besides the {output_mib:.0f} MiB output image"
          + (f"; bound {args.memory_mb:g} MiB)" if args.memory_mb else ")"))
    print(f"ratio tiled/untiled: time {t['seconds'] / u['seconds']:.2f}x, peak memory {t['peak_mib'] / max(u['peak_mib'], 1e-9):.3f}x")
    print(f"max |tiled - untiled|: {diff[mask].max().item() * 255:.3f}/255 away from seams, "
          f"{diff.max().item() * 255:.3f}/255 overall (float16 copies)")
    ok = diff[mask].max().item() <= 1 / 255 and t["peak_mib"] < u["peak_mib"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
