"""Image-quality metrics, one file per metric. Inputs: float tensors N x C x H x W in [0, 1].

    from imgsteal.metrics import psnr, ssim, fid, kid

(Imported eagerly: a lazy module __getattr__ would be shadowed by the submodule of the same name
as soon as anything imported `imgsteal.metrics.psnr`.)
"""

from imgsteal.metrics.fid import fid
from imgsteal.metrics.kid import kid
from imgsteal.metrics.psnr import psnr
from imgsteal.metrics.ssim import ssim

__all__ = ["fid", "kid", "psnr", "ssim"]
