"""The wavelet high-frequency loss of Mi et al. (AAAI 2024): L1 between the detail sub-bands of a
multi-level 2-D discrete wavelet transform of the surrogate's output F_A(x) and the victim's F_V(x).

The transform is `ptwt.wavedec2` (PyTorch, differentiable, same filters as PyWavelets), with
symmetric boundary extension: a constant image then has zero detail coefficients up to rounding,
so a constant colour offset between the two images costs nothing, whereas zero padding would turn
the image border into a false edge.
"""

from __future__ import annotations

import torch

DEFAULT_WAVELET = "db3"  # Daubechies-3: 6 taps, 3 vanishing moments
DEFAULT_LEVELS = 2
DEFAULT_MODE = "symmetric"


def detail_bands(images: torch.Tensor, wavelet: str = DEFAULT_WAVELET, levels: int = DEFAULT_LEVELS,
                 mode: str = DEFAULT_MODE) -> list[torch.Tensor]:
    """The 3 x `levels` detail sub-bands (horizontal, vertical, diagonal at each level) of N x C x H x W
    images, coarsest level first. The approximation (low-pass) band is left out."""
    import ptwt

    coefficients = ptwt.wavedec2(images.float(), wavelet, level=levels, mode=mode)
    return [band for level in coefficients[1:] for band in level]


class WaveletHighFrequencyLoss:
    """sum over the detail sub-bands of mean |band(output) - band(target)|, images in [0, 1].

    Summed over bands (each a mean over its coefficients), so every level and orientation counts the
    same whatever its size. Zero for identical images and for images that differ by a constant;
    grows with differences in edges and texture. Callable: loss(output, target) -> scalar tensor.
    """

    def __init__(self, wavelet: str = DEFAULT_WAVELET, levels: int = DEFAULT_LEVELS, mode: str = DEFAULT_MODE) -> None:
        import pywt

        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {wavelet!r} (PyWavelets names, e.g. db3, haar, sym4)")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.wavelet, self.levels, self.mode = wavelet, levels, mode

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
        # One transform of both halves of a stacked batch: half the kernel launches.
        bands = detail_bands(torch.cat([output, target.to(output.dtype)]), self.wavelet, self.levels, self.mode)
        n = output.shape[0]
        return sum((band[:n] - band[n:]).abs().mean() for band in bands)
