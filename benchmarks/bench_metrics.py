"""Benchmark: imgsteal PSNR + SSIM against scikit-image (per image) and torchmetrics (batched SSIM).

Goals (exit status 1 if one is missed):
- imgsteal PSNR + SSIM at least 3x faster than scikit-image's peak_signal_noise_ratio +
  structural_similarity called per image;
- imgsteal PSNR + SSIM faster than torchmetrics' batched SSIM alone;
- imgsteal values equal scikit-image's to within 1e-4.

All runs happen in this process on the same data; each timing is the best of --repeats runs (runs of
the three contenders interleaved, so a noisy neighbour hurts all of them alike). Usage:

    python benchmarks/bench_metrics.py [--images 64] [--size 256] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Callable

import numpy as np
import torch

MIN_SPEEDUP_VS_SKIMAGE = 3.0
MIN_SPEEDUP_VS_TORCHMETRICS = 1.0
MAX_ABS_DIFF = 1e-4


def make_pair(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n RGB images size x size in [0, 1] (smooth structure plus texture) and a noisy, blurred copy."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 16, size // 16, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x = (0.8 * smooth + 0.2 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    y = (blurred + 0.03 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
    return x.contiguous(), y.contiguous()


def time_runs(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Call each contender once to warm up, then `repeats` interleaved timed rounds; seconds per run."""
    results: dict[str, object] = {name: fn() for name, fn in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure

    from imgsteal.metrics.psnr import psnr
    from imgsteal.metrics.ssim import ssim

    x, y = make_pair(args.images, args.size)
    x_np = [a.permute(1, 2, 0).numpy() for a in x]  # H x W x C float32, made before timing
    y_np = [b.permute(1, 2, 0).numpy() for b in y]

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        return psnr(x, y), ssim(x, y)

    def skimage() -> tuple[np.ndarray, np.ndarray]:
        p = [peak_signal_noise_ratio(a, b, data_range=1) for a, b in zip(x_np, y_np)]
        s = [
            structural_similarity(
                a,
                b,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1,
            )
            for a, b in zip(x_np, y_np)
        ]
        return np.array(p), np.array(s)

    def torchmetrics() -> torch.Tensor:
        with torch.no_grad():
            return structural_similarity_index_measure(
                x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, reduction="none", data_range=1.0
            )

    print(
        f"{args.images} RGB images {args.size}x{args.size}, torch threads {torch.get_num_threads()}, "
        f"best of {args.repeats} interleaved runs"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        contenders = {"imgsteal": ours, "skimage": skimage, "torchmetrics": torchmetrics}
        times = time_runs(contenders, args.repeats)

    ours_psnr, ours_ssim = ours()
    ref_psnr, ref_ssim = skimage()
    tm_ssim = torchmetrics()
    diff_psnr = float(np.abs(ours_psnr.numpy() - ref_psnr).max())
    diff_ssim = float(np.abs(ours_ssim.numpy() - ref_ssim).max())
    diff_tm = float(np.abs(tm_ssim.double().numpy() - ref_ssim).max())

    best = {name: min(ts) for name, ts in times.items()}
    for name, ts in times.items():
        what = "SSIM (batched)" if name == "torchmetrics" else "PSNR + SSIM"
        print(f"  {name:<13} {what:<15} best {best[name]:8.4f} s   median {statistics.median(ts):8.4f} s")
    vs_skimage = best["skimage"] / best["imgsteal"]
    vs_torchmetrics = best["torchmetrics"] / best["imgsteal"]
    print(f"  speed-up vs skimage:      {vs_skimage:6.2f}x (goal >= {MIN_SPEEDUP_VS_SKIMAGE}x)")
    print(f"  speed-up vs torchmetrics: {vs_torchmetrics:6.2f}x (goal > {MIN_SPEEDUP_VS_TORCHMETRICS}x)")
    print(
        f"  max |imgsteal - skimage|: PSNR {diff_psnr:.2e} dB, SSIM {diff_ssim:.2e} (goal <= {MAX_ABS_DIFF})"
    )
    print(f"  max |torchmetrics - skimage| SSIM: {diff_tm:.2e} (for information)")

    missed = []
    if vs_skimage < MIN_SPEEDUP_VS_SKIMAGE:
        missed.append(f"speed-up vs skimage {vs_skimage:.2f}x < {MIN_SPEEDUP_VS_SKIMAGE}x")
    if vs_torchmetrics <= MIN_SPEEDUP_VS_TORCHMETRICS:
        missed.append(f"not faster than torchmetrics ({vs_torchmetrics:.2f}x)")
    if not max(diff_psnr, diff_ssim) <= MAX_ABS_DIFF:
        missed.append(f"values differ from skimage by {max(diff_psnr, diff_ssim):.2e} > {MAX_ABS_DIFF}")
    print("FAIL: " + "; ".join(missed) if missed else "OK: all goals met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
