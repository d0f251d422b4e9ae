"""The image history buffer of CycleGAN (Shrivastava et al. 2017; Zhu et al. 2017).

The discriminator is shown a mix of the newest generated images and older ones from a pool of 50,
which damps the oscillation of the generator/discriminator game. The pool is an `nn.Module` whose
images are a buffer: a training checkpoint stores them as tensors next to the weights (exactly, and
without bloating the JSON header), so a resumed run draws from the very same history.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


class ImagePool(nn.Module):
    """Holds up to `size` generated images (N x C x H x W, same size each) and swaps them at random.

    `query(images)`: while the pool is filling, each image is stored and returned as is; once full,
    each image is, with probability 1/2, swapped with a random stored one (the stored one is
    returned), else returned as is. size=0 disables the pool. Random draws use the global torch RNG,
    which training checkpoints save and restore.
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.register_buffer("images", torch.empty(0))

    def __len__(self) -> int:
        return self.images.shape[0] if self.images.dim() == 4 else 0

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images: N x C x H x W (detached generator outputs) -> N images to show the discriminator."""
        if self.size == 0:
            return images
        images = images.detach().float()  # stored in float32 whatever precision the generator ran in
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self) < self.size:
                stored = image.clone()
                self.images = stored if len(self) == 0 else torch.cat([self.images, stored])
                out.append(image)
            elif torch.rand(()).item() > 0.5:
                slot = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[slot : slot + 1].clone())
                self.images[slot] = image[0]
            else:
                out.append(image)
        return torch.cat(out)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Restore the stored images; the pool's fill level comes from the checkpoint, not from the
        (possibly empty) live buffer, so the usual shape check does not apply."""
        unexpected = sorted(set(state_dict) - {"images"})
        if strict and (unexpected or "images" not in state_dict):
            raise RuntimeError(f"ImagePool state needs exactly 'images', got {sorted(state_dict)}")
        if "images" in state_dict:
            self.images = state_dict["images"].to(self.images.device, self.images.dtype).clone()
        return nn.modules.module._IncompatibleKeys([], unexpected)
