"""Device choice: CUDA when present, CPU otherwise; `--device` overrides."""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; otherwise the named device (validated)."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from imgsteal.errors import ImgstealError

        raise ImgstealError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device
