"""The server's memory budget: measure what a model call costs per output pixel, derive the limits.

At start-up the server runs the model on two small probe images and measures the peak resident
memory (Linux: VmHWM after resetting it through /proc/self/clear_refs; on CUDA the allocator's
peak) to get the activation bytes per output pixel. From that and `--max-memory` it derives how
many output pixels one model call may hold and how much request data may be in flight, and states
the bound:

    bound = baseline (process after loading the model)
          + bodies   (max_connections x max_body_bytes: request bodies being read)
          + workers x bytes_per_output_pixel x max_batch_output_pixels   (running model calls)
          + tensors  (decoded inputs and outputs of admitted requests)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Per admitted request, besides the model's activations: the decoded float32 input (12 B per input
# pixel) and, per output pixel, the float32 output (12 B), its uint8 copy (3 B) and the PNG (<= 3 B).
INPUT_TENSOR_BYTES_PER_PIXEL = 12
OUTPUT_BYTES_PER_PIXEL = 18
SAFETY = 1.5  # measured activation cost x this


def rss_bytes() -> int:
    """Resident memory of this process now, bytes (0 where /proc is missing)."""
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (VmHWM), bytes (0 where /proc is missing)."""
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def request_bytes(input_pixels: int, scale: int) -> int:
    """Memory one admitted request holds outside the model call: decoded input, output, PNG."""
    return input_pixels * (INPUT_TENSOR_BYTES_PER_PIXEL + OUTPUT_BYTES_PER_PIXEL * scale * scale)


def activation_bytes_per_output_pixel(run_batch, scale: int, device: torch.device | None = None, side: int = 48) -> float:
    """Peak memory of one model call per output pixel, measured on probes of `side` and 2 x `side` pixels.

    The slope between the two probes removes fixed costs; the result is x SAFETY and never below the
    size of the output itself (12 bytes per output pixel)."""
    floor = 12.0 * SAFETY
    on_cuda = device is not None and device.type == "cuda"
    run_batch(torch.rand(1, 3, side, side))  # warm-up: lazy initialisation, allocator pools
    peaks = []
    for s in (side, 2 * side):
        x = torch.rand(1, 3, s, s)
        if on_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            run_batch(x)
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - before)
        else:
            before = rss_bytes()
            if not _reset_peak():
                log.warning("cannot measure peak memory here (/proc/self/clear_refs); assuming 4 KB per output pixel")
                return 4096.0
            run_batch(x)
            peaks.append(max(0, peak_rss_bytes() - before))
    out_small, out_large = (side * scale) ** 2, (2 * side * scale) ** 2
    slope = (peaks[1] - peaks[0]) / (out_large - out_small)
    per_px = max(slope, peaks[1] / out_large)  # allocator reuse can hide part of the slope
    return max(floor, per_px * SAFETY)


@dataclass(frozen=True)
class MemoryPlan:
    """Limits derived from a memory budget (bytes) and what they add up to."""

    baseline: int
    bodies: int
    activation_bytes_per_output_pixel: float
    workers: int
    max_batch_output_pixels: int
    max_inflight_bytes: int
    requested: int | None  # --max-memory, bytes (None: derived from the other limits)

    @property
    def bound(self) -> int:
        return int(self.baseline + self.bodies + self.workers * self.activation_bytes_per_output_pixel
                   * self.max_batch_output_pixels + self.max_inflight_bytes)

    def describe(self) -> str:
        head = f"memory bound {self.bound / MB:.0f} MB" + (f" (--max-memory {self.requested / MB:.0f} MB)" if self.requested else " (no --max-memory: derived from the limits)")
        return (f"{head}: process {self.baseline / MB:.0f} MB + request bodies {self.bodies / MB:.0f} MB"
                f" + {self.workers} model call(s) x {self.max_batch_output_pixels} output px"
                f" x {self.activation_bytes_per_output_pixel:.0f} B/px (measured x{SAFETY})"
                f" + request tensors {self.max_inflight_bytes / MB:.0f} MB")


def plan_memory(
    *,
    baseline: int,
    activation_per_px: float,
    workers: int,
    max_pixels: int,
    scale: int,
    max_body_bytes: int,
    max_connections: int,
    max_memory_bytes: int | None,
) -> MemoryPlan:
    """Split `max_memory_bytes` (or, when None, size a budget for two max-size requests per worker).

    Raises ValueError when the budget cannot hold even one max-size request."""
    max_out = max_pixels * scale * scale
    one_request = request_bytes(max_pixels, scale)
    bodies = max_connections * max_body_bytes
    if max_memory_bytes is None:
        return MemoryPlan(baseline, bodies, activation_per_px, workers, max_out, (workers + 2) * one_request, None)
    free = max_memory_bytes - baseline - bodies
    batch_px = int(0.6 * free / (workers * activation_per_px)) if free > 0 else 0
    inflight = int(0.4 * free) if free > 0 else 0
    if batch_px < max_out or inflight < 2 * one_request:
        need = baseline + bodies + workers * activation_per_px * max_out / 0.6
        need = max(need, baseline + bodies + 2 * one_request / 0.4)
        raise ValueError(
            f"--max-memory {max_memory_bytes / MB:.0f} MB cannot hold one request of --max-pixels {max_pixels}"
            f" (x{scale * scale} output pixels) with {workers} model worker(s): the process takes {baseline / MB:.0f} MB,"
            f" request bodies up to {bodies / MB:.0f} MB, one model call about {activation_per_px * max_out / MB:.0f} MB;"
            f" give at least {need / MB:.0f} MB, or lower --max-pixels, --max-connections or --max-body-bytes")
    return MemoryPlan(baseline, bodies, activation_per_px, workers, batch_px, inflight, max_memory_bytes)
