"""What PSNR and SSIM share: input checks, border cropping, BT.601 luma, CPU chunk scheduling.

Both metrics take a pair of images N x C x H x W (or C x H x W) with values in [0, data_range] and
follow the super-resolution benchmark convention: optionally crop `crop_border` pixels from every
side, optionally compare only the Y (luma) channel of ITU-R BT.601 as MATLAB's rgb2ycbcr computes it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")

# MATLAB rgb2ycbcr, for RGB in [0, 255]: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
_Y_OFFSET = 16.0 / 255.0
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def compute_dtype(x: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    """float64 if either input is float64; otherwise (float32/16, bfloat16, integers) float32."""
    return torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32


def rgb_to_y(images: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """BT.601 luma of RGB images N x 3 x H x W with values in [0, data_range] -> N x 1 x H x W.

    Y = data_range * 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, i.e. MATLAB's rgb2ycbcr
    scaled to the input range (for [0, 1] inputs Y lies in [16/255, 235/255]).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"y_channel=True needs RGB images N x 3 x H x W, got shape {tuple(images.shape)}")
    r, g, b = images.unbind(1)
    luma = r * _Y_WEIGHTS[0] + g * _Y_WEIGHTS[1] + b * _Y_WEIGHTS[2] + _Y_OFFSET * data_range
    return luma.unsqueeze(1)


def prepare_pair(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float,
    crop_border: int,
    y_channel: bool,
    min_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and normalise a pair of image batches for a full-reference metric.

    Returns two N x C' x H' x W' tensors in the compute dtype (see `compute_dtype`), with the border
    cropped and, if `y_channel`, reduced to luma (C' = 1). Raises ValueError with a clear message on
    non-tensors, wrong number of dims, mismatched shapes, a bad crop_border/data_range, or images
    smaller than `min_size` pixels on a side after cropping.
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (3, 4):
            raise ValueError(f"{name} must be C x H x W or N x C x H x W, got shape {tuple(t.shape)}")
        if t.is_complex():
            raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")

    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    n, c, h, w = x.shape
    if n == 0 or c == 0:
        raise ValueError(f"empty image batch, shape {tuple(x.shape)}")
    hc, wc = h - 2 * crop_border, w - 2 * crop_border
    if hc < min_size or wc < min_size:
        raise ValueError(
            f"images of {h} x {w} pixels with crop_border={crop_border} leave {max(hc, 0)} x {max(wc, 0)}; "
            f"this metric needs at least {min_size} x {min_size}"
        )
    if crop_border:
        x = x[..., crop_border : h - crop_border, crop_border : w - crop_border]
        y = y[..., crop_border : h - crop_border, crop_border : w - crop_border]

    dtype = compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    if y_channel:
        x, y = rgb_to_y(x, data_range), rgb_to_y(y, data_range)
    return x, y


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the calling thread, restoring it on exit.

    The metrics run many small ops on cache-sized chunks. Split over OpenMP threads, every op ends in
    a barrier, and when other processes share the cores each barrier waits for a time slice: on the
    2-core development VM under load that made SSIM 3-20x slower (outliers far worse).
    Single-threaded ops, parallelised over chunks instead (`map_chunks`), degrade gracefully.
    """
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def map_chunks(run_chunk: Callable[[int, dict], T], n_chunks: int, device: torch.device) -> list[T]:
    """[run_chunk(i, state) for i in range(n_chunks)], on CPU spread over torch.get_num_threads() threads.

    Each worker (this thread plus up to get_num_threads() - 1 helpers) runs single-threaded torch ops
    and pulls the next chunk index when done, so a descheduled worker does not hold the others up.
    `state` is a dict private to the worker, for buffers it reuses across its chunks. On other
    devices the chunks run in order in this thread. An exception in any chunk is re-raised.
    """
    if device.type != "cpu":
        state: dict = {}
        return [run_chunk(i, state) for i in range(n_chunks)]
    workers = min(torch.get_num_threads(), n_chunks)
    results: list = [None] * n_chunks
    next_index = itertools.count()  # next() on a count is atomic under the GIL
    failed = threading.Event()

    def work() -> None:
        state: dict = {}
        with intra_op_threads(1):
            for i in next_index:
                if i >= n_chunks or failed.is_set():
                    return
                try:
                    results[i] = run_chunk(i, state)
                except BaseException:
                    failed.set()
                    raise

    if workers <= 1:
        work()
        return results
    with concurrent.futures.ThreadPoolExecutor(workers - 1, thread_name_prefix="imgsteal-metrics") as pool:
        helpers = [pool.submit(work) for _ in range(workers - 1)]
        work()  # if this raises, `failed` stops the helpers and leaving the block waits for them
        for helper in helpers:
            helper.result()  # re-raises a helper's exception
    return results
