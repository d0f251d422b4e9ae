"""Image-quality metrics, one file per metric. Inputs: float tensors N x C x H x W in [0, 1].

    from imgsteal.metrics import psnr, ssim, fid, kid
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "psnr": "imgsteal.metrics.psnr",
    "ssim": "imgsteal.metrics.ssim",
    "fid": "imgsteal.metrics.fid",
    "kid": "imgsteal.metrics.kid",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: FID pulls in Inception; PSNR users should not pay for it.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
