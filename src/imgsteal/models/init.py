"""Weight initialisation of the reference pix2pix / CycleGAN implementation (`init_type='normal'`).

Zhu, Park et al.'s pytorch-CycleGAN-and-pix2pix initialises every convolution, transposed
convolution and linear layer with weights ~ N(0, 0.02) and zero biases, and every BatchNorm2d with
weights ~ N(1, 0.02) and zero biases. The ResNet generator, the UNet and the PatchGAN apply it by
default (`init="reference"`); `init="pytorch"` keeps PyTorch's own defaults (Kaiming-uniform).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

Init = Literal["reference", "pytorch"]
INITS: tuple[str, ...] = ("reference", "pytorch")
REFERENCE_STD = 0.02


def reference_init(module: nn.Module, std: float = REFERENCE_STD) -> nn.Module:
    """Re-initialise `module` in place as the reference does (see the module docstring); returns it.
    InstanceNorm without affine parameters has nothing to initialise."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def apply_init(module: nn.Module, init: str) -> nn.Module:
    """`init` 'reference' -> reference_init(module); 'pytorch' -> unchanged. ValueError otherwise."""
    if init == "reference":
        return reference_init(module)
    if init == "pytorch":
        return module
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
