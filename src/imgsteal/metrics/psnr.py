"""Peak signal-to-noise ratio, one value per image (matches scikit-image's peak_signal_noise_ratio)."""

from __future__ import annotations

import torch

from imgsteal.metrics._color import map_chunks, prepare_pair

# Elements per chunk: on CPU about one 256 x 256 RGB image, so the difference stays in L2.
_CHUNK_ELEMENTS = {"cpu": 1 << 18}
_CHUNK_ELEMENTS_DEFAULT = 1 << 26


@torch.no_grad()
def psnr(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """PSNR in dB of each image pair: 10 * log10(data_range**2 / MSE), MSE over all pixels and channels.

    x, y: N x C x H x W (or C x H x W, treated as N = 1) with values in [0, data_range].
    crop_border: pixels removed from every side first; y_channel: compare BT.601 luma only (RGB input).
    Returns a float64 tensor of length N on the inputs' device; identical images give +inf.
    Raises ValueError on mismatched or malformed shapes. Not differentiable.
    """
    x, y = prepare_pair(x, y, data_range=data_range, crop_border=crop_border, y_channel=y_channel)
    n = x.shape[0]
    per_image = x[0].numel()
    # A few images at a time through one reused buffer: the difference stays in cache and no
    # batch-sized temporary is page-faulted in.
    budget = _CHUNK_ELEMENTS.get(x.device.type, _CHUNK_ELEMENTS_DEFAULT)
    chunk = min(n, max(1, budget // per_image))
    starts = range(0, n, chunk)

    def run_chunk(index: int, state: dict) -> torch.Tensor:
        start = starts[index]
        if "diff" not in state:
            state["diff"] = torch.empty((chunk, *x.shape[1:]), dtype=x.dtype, device=x.device)
        out = state["diff"][: min(chunk, n - start)]
        diff = torch.sub(x[start : start + chunk], y[start : start + chunk], out=out)
        # torch sums float32 pairwise (cascade): ~1e-7 relative, far below what a dB value shows.
        return diff.mul_(diff).sum(dim=(1, 2, 3)).double()

    sse = map_chunks(run_chunk, len(starts), x.device)
    mse = torch.cat(sse) / per_image
    return 10.0 * torch.log10(data_range**2 / mse)
