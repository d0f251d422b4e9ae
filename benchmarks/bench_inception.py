"""Inception feature extraction speed: imgsteal's FID Inception vs pytorch-fid's, same weights, same images.

Both models get the same random-init weights in the FID layout (no download needed), the same
N x 3 x H x W batches in [0, 1] on the same device, and each resizes to 299 and normalises inside.
Prints images/second for both, the ratio (goal: ours >= pytorch-fid's) and the largest feature
difference (should be ~1e-6: same network, same numbers).

    python benchmarks/bench_inception.py [--device cpu|cuda] [--batch-size 25] [--batches 4] [--size 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _time_per_batch(run, batch: torch.Tensor, repeats: int, device: torch.device) -> float:
    run(batch)  # warm-up: allocator, oneDNN/cuDNN algorithm selection
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per model (median is reported)")
    parser.add_argument("--size", type=int, default=128, help="input image side in pixels (resized to 299 inside)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from imgsteal.device import pick_device
    from imgsteal.metrics.features import FID_WEIGHTS_FILENAME, load_inception
    from imgsteal.metrics.inception import random_fid_inception_state_dict

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        # pytorch-fid finds its weights in torch hub's cache; ours gets the same file by path.
        checkpoints = Path(tmp) / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        weights = checkpoints / FID_WEIGHTS_FILENAME
        torch.save(random_fid_inception_state_dict(seed=0), weights)
        torch.hub.set_dir(str(Path(tmp) / "hub"))

        from pytorch_fid.inception import InceptionV3

        reference = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
        ours, _ = load_inception(weights, device)

    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(args.batch_size, 3, args.size, args.size, generator=generator).to(device)

    def run_reference(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # pytorch-fid's get_activations uses no_grad
            return reference(x)[0].flatten(1)

    def run_ours(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return ours(x)

    diff = (run_ours(batch) - run_reference(batch)).abs().max().item()
    # Interleave the two so a load spike on a shared machine hits both alike.
    t_ref, t_ours = [], []
    for _ in range(args.batches):
        t_ref.append(_time_per_batch(run_reference, batch, 1, device))
        t_ours.append(_time_per_batch(run_ours, batch, 1, device))
    ref_ips = args.batch_size / statistics.median(t_ref)
    ours_ips = args.batch_size / statistics.median(t_ours)

    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} size={args.size}px "
          f"timed_batches={args.batches} (cpus={os.cpu_count()})")
    print(f"pytorch-fid InceptionV3: {ref_ips:8.2f} images/s")
    print(f"imgsteal FIDInceptionV3: {ours_ips:8.2f} images/s")
    print(f"ratio ours/pytorch-fid:  {ours_ips / ref_ips:8.3f}  (goal >= 1)")
    print(f"max |feature difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
