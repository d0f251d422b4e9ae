"""Structural similarity (Wang et al. 2004), one value per image.

Matches scikit-image's ``structural_similarity(channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``: 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, the SSIM map averaged over the 'valid' region (5-pixel margin dropped) and over channels.

How it is computed, and why (a plain batched depthwise convolution is memory-bound on CPU and slower
than scikit-image):
- Only four filtered maps are needed, of u = x + y and v = x - y and their squares: the SSIM terms
  are 2 mu_x mu_y = (mu_u^2 - mu_v^2) / 2, var_x + var_y = (var_u + var_v) / 2 and
  2 cov_xy = (var_u - var_v) / 2. u is shifted by -data_range so its second moment stays small and
  float32 keeps var_u = E[u^2] - E[u]^2 accurate.
- The separable Gaussian is applied as banded matrix products: a block of `b` output rows is a
  (b x b+10) band matrix times b+10 input rows. All planes of all four maps are stacked into one tall
  matrix, so each pass is a single batched GEMM (outputs that straddle two planes are discarded).
- Planes are processed a few at a time so that the working set stays in cache; on CPU the chunks are
  spread over worker threads that each run single-threaded ops (see `map_chunks`).
"""

from __future__ import annotations

import functools

import torch

from imgsteal.metrics._color import map_chunks, prepare_pair

_SIGMA = 1.5
_RADIUS = 5  # int(truncate * sigma + 0.5) with scikit-image's truncate = 3.5 -> an 11-tap window
_WINDOW = 2 * _RADIUS + 1
_K1, _K2 = 0.01, 0.03

# Output rows / columns per band-matrix block. A block of b outputs costs b + 10 MACs per output, so
# small blocks waste less, but GEMMs that are too small run far below peak. Measured on AVX-512 with
# MKL: the vertical pass (N = W wide) is fastest around 8, the horizontal one (N = b) around 16.
_BLOCK_ROWS = 8
_BLOCK_COLS = 16
# Elements (planes x H x W) per chunk. On CPU one 256 x 256 plane keeps all maps in L2. Elsewhere
# (GPU) big chunks: the buffers hold about 13 maps, ~440 MB in float32 at 1 << 23 elements.
_CHUNK_ELEMENTS = {"cpu": 1 << 16}
_CHUNK_ELEMENTS_DEFAULT = 1 << 23


@torch.no_grad()
def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """Mean SSIM of each image pair (Gaussian window 11 x 11, sigma 1.5, valid region, channel mean).

    x, y: N x C x H x W (or C x H x W, treated as N = 1) with values in [0, data_range]; at least
    11 x 11 pixels after cropping. crop_border: pixels removed from every side first; y_channel:
    compare BT.601 luma only (RGB input). Returns a float64 tensor of length N (1.0 for identical
    images) on the inputs' device; an image with NaN/inf pixels gets NaN, the others are unaffected.
    float64 inputs are computed in float64, others in float32 (within ~1e-6 of float64).
    Raises ValueError on mismatched or malformed shapes. Not differentiable.
    """
    x, y = prepare_pair(
        x, y, data_range=data_range, crop_border=crop_border, y_channel=y_channel, min_size=_WINDOW
    )
    n, c, h, w = x.shape
    planes_x, planes_y = x.reshape(n * c, h, w), y.reshape(n * c, h, w)
    budget = _CHUNK_ELEMENTS.get(x.device.type, _CHUNK_ELEMENTS_DEFAULT)
    chunk = min(n * c, max(1, budget // (h * w)))
    sums = _plane_sums(planes_x, planes_y, chunk, float(data_range))
    if chunk > 1 and not bool(torch.isfinite(sums).all()):
        # Planes share GEMM blocks within a chunk, and 0 * NaN = NaN: redo the chunks holding a
        # NaN/inf plane one plane at a time, so a bad pixel only spoils its own image.
        bad_planes = torch.nonzero(~torch.isfinite(sums)).flatten().tolist()
        for start in sorted({plane - plane % chunk for plane in bad_planes}):
            end = start + chunk
            sums[start:end] = _plane_sums(planes_x[start:end], planes_y[start:end], 1, float(data_range))
    return sums.view(n, c).mean(dim=1) / ((h - 2 * _RADIUS) * (w - 2 * _RADIUS))


def _plane_sums(x: torch.Tensor, y: torch.Tensor, chunk: int, data_range: float) -> torch.Tensor:
    """Sum of the SSIM map over the valid region of each plane, `chunk` planes at a time.

    x, y: P x H x W in the compute dtype -> float64 tensor (P,).
    """
    total, h, w = x.shape
    starts = range(0, total, chunk)

    def run_chunk(index: int, plans: dict) -> torch.Tensor:
        start = starts[index]
        planes = min(chunk, total - start)
        if planes not in plans:  # one plan for the full chunks, one for a shorter last chunk
            plans[planes] = _ChunkPlan(planes, h, w, data_range, x.dtype, x.device)
        return plans[planes].run(x[start : start + planes], y[start : start + planes])

    return torch.cat(map_chunks(run_chunk, len(starts), x.device))


class _ChunkPlan:
    """Buffers and views for SSIM of `planes` planes of h x w, built once and reused by every chunk.

    Reuse matters on CPU: fresh multi-megabyte buffers are page-faulted in on first touch, and with
    one-plane chunks the Python-side cost of building views is as large as the arithmetic.
    """

    def __init__(
        self, planes: int, h: int, w: int, data_range: float, dtype: torch.dtype, device: torch.device
    ) -> None:
        ho, wo = h - 2 * _RADIUS, w - 2 * _RADIUS
        c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
        self.data_range = data_range
        self.twice_c1 = torch.tensor(2.0 * c1, dtype=dtype, device=device)
        # 2 C2 rides along in the filtered u^2 map (the taps sum to 1), saving a pass later.
        self.twice_c2 = torch.tensor(2.0 * c2, dtype=dtype, device=device)

        # Stack u, v, u^2, v^2 as one tall matrix of 4*planes*h rows of w, zero-padded to whole row
        # blocks plus the 10 rows the last block reads beyond. The padding stays zero: it must hold
        # finite numbers, since the band matrices multiply it by 0.
        rows = 4 * planes * h
        row_blocks = -(-rows // _BLOCK_ROWS)
        rows_padded = row_blocks * _BLOCK_ROWS
        stacked = torch.zeros((rows_padded + _WINDOW - 1) * w, dtype=dtype, device=device)
        self.u, self.v, self.uu, self.vv = stacked[: rows * w].view(4, planes, h, w).unbind(0)

        # Vertical pass: output rows [k*b, (k+1)*b) = band (b x b+10) @ input rows [k*b, k*b+b+10).
        # Outputs whose window straddles two planes are computed and ignored.
        self.col_in = stacked.as_strided(
            (row_blocks, _BLOCK_ROWS + _WINDOW - 1, w), (_BLOCK_ROWS * w, w, 1)
        )
        self.band_v = _band(_BLOCK_ROWS, dtype, device).expand(row_blocks, -1, -1)
        block_w = min(_BLOCK_COLS, wo)
        col_blocks = -(-wo // block_w)
        # The last column block may read past the end of the last row: zero tail.
        vert = torch.zeros(rows_padded * w + block_w + _WINDOW - 1, dtype=dtype, device=device)
        self.vert = vert[: rows_padded * w].view(row_blocks, _BLOCK_ROWS, w)

        # Horizontal pass: output columns [k*b, (k+1)*b) = rows[:, k*b : k*b+b+10] @ band^T.
        self.row_in = vert.as_strided((col_blocks, rows_padded, block_w + _WINDOW - 1), (block_w, w, 1))
        self.band_h = _band(block_w, dtype, device).t().expand(col_blocks, -1, -1)
        self.filtered = torch.empty(col_blocks, rows_padded, block_w, dtype=dtype, device=device)
        maps = self.filtered[:, :rows].view(col_blocks, 4, planes * h, block_w).unbind(1)
        self.mu_u, self.mu_v, self.s_uu, self.s_vv = maps
        self.scratch = torch.empty_like(self.mu_u, memory_format=torch.contiguous_format)

        # The SSIM map ends up in mu_v's slot; the valid region is rows < ho of each plane and
        # columns < wo (the last column block may overhang).
        ssim_map = self.mu_v.view(col_blocks, planes, h, block_w)[:, :, :ho]
        full_blocks = wo // block_w
        self.valid_full = ssim_map[:full_blocks]
        self.valid_rest = None
        if full_blocks < col_blocks:
            self.valid_rest = ssim_map[full_blocks, :, :, : wo - full_blocks * block_w]

    def run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the SSIM map over the valid region of each plane; x, y: planes x h x w -> float64."""
        data_range = self.data_range
        # u is shifted by -R so that E[u^2] stays small and E[u^2] - E[u]^2 keeps its digits.
        torch.add(x, y, out=self.u).sub_(data_range)
        torch.sub(x, y, out=self.v)
        torch.addcmul(self.twice_c2, self.u, self.u, out=self.uu)
        torch.mul(self.v, self.v, out=self.vv)

        torch.bmm(self.band_v, self.col_in, out=self.vert)
        torch.bmm(self.row_in, self.band_h, out=self.filtered)

        # In terms of mu_x, mu_y etc.: mu_u + R = mu_x + mu_y, mu_v = mu_x - mu_y, so
        #   (mu_u + R)^2 - mu_v^2 = 4 mu_x mu_y,   (mu_u + R)^2 + mu_v^2 = 2 (mu_x^2 + mu_y^2),
        #   var_u - var_v = 4 cov_xy,              var_u + var_v = 2 (var_x + var_y).
        mu_u, mu_v, s_uu, s_vv, lum = self.mu_u, self.mu_v, self.s_uu, self.s_vv, self.scratch
        torch.add(mu_u, data_range, out=lum)
        s_uu.addcmul_(mu_u, mu_u, value=-1.0)  # var_u + 2 C2
        torch.addcmul(self.twice_c1, lum, lum, out=lum)  # (mu_x + mu_y)^2 + 2 C1
        sq_v = torch.mul(mu_v, mu_v, out=mu_u)
        s_vv.sub_(sq_v)  # var_v
        lum_num = torch.sub(lum, sq_v, out=mu_v)  # 2 (2 mu_x mu_y + C1)
        lum_den = lum.add_(sq_v)  # 2 (mu_x^2 + mu_y^2 + C1)
        cs_num = torch.sub(s_uu, s_vv, out=mu_u)  # 2 (2 cov_xy + C2)
        cs_den = s_uu.add_(s_vv)  # 2 (var_x + var_y + C2)
        lum_num.mul_(cs_num).div_(lum_den.mul_(cs_den))  # the SSIM map, in mu_v's slot

        # float32 sums are pairwise (cascade) in torch: ~1e-7 relative for a 256 x 256 plane.
        sums = self.valid_full.sum(dim=(0, 2, 3)).double()
        if self.valid_rest is not None:
            sums += self.valid_rest.sum(dim=(1, 2))
        return sums


@functools.lru_cache(maxsize=32)
def _band(block: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(block x block+10) matrix whose row i holds the 11 Gaussian taps at columns i..i+10."""
    offsets = torch.arange(-_RADIUS, _RADIUS + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / _SIGMA) ** 2)
    taps /= taps.sum()
    band = torch.zeros(block, block + _WINDOW - 1, dtype=torch.float64)
    for i in range(block):
        band[i, i : i + _WINDOW] = taps
    return band.to(dtype=dtype, device=device)
