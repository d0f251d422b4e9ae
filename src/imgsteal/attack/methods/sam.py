"""Sharpness-aware minimisation (Foret et al., ICLR 2021) as a two-pass step on one network.

SAM minimises max_{||e|| <= rho} L(w + e): a first forward/backward gives g = dL/dw at w, the
weights move to the (first-order) worst point w + rho g / ||g||, a second forward/backward there
gives the gradient the optimizer then applies - at the original weights w, which are restored first.
So a SAM step costs two forward/backward passes of that network.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers keep their running statistics unchanged inside the block (momentum 0), so the
    extra forward pass at the perturbed weights does not count twice in them."""
    saved = [(m, m.momentum) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


class SharpnessAwareMinimization:
    """The perturbation half of SAM for the parameters of one network; the optimizer is unchanged.

        loss = closure(); backward(loss)          # gradient at w
        sam.ascend()                              # w <- w + rho g / ||g||
        zero grads; loss = closure(); backward    # gradient at the perturbed weights
        sam.restore()                             # w back, keeping that gradient
        optimizer.step()

    rho: radius of the neighbourhood (> 0; Mi et al. use 0.05). The gradient direction is scale-free,
    so gradients scaled by a float16 GradScaler give the same perturbation.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], rho: float = 0.05) -> None:
        if not rho > 0:
            raise ValueError(f"SAM radius rho must be > 0, got {rho}")
        self.parameters = [p for p in parameters if p.requires_grad]
        self.rho = rho
        self._moved: list[tuple[nn.Parameter, torch.Tensor]] = []

    @torch.no_grad()
    def ascend(self) -> bool:
        """Move the weights to the sharpest nearby point along the current gradients. Returns False (and
        moves nothing) when the gradients are missing, zero or not finite."""
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return False
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
            return False
        scale = self.rho / norm
        self._moved = []
        for p in self.parameters:
            if p.grad is not None:
                e = (p.grad.float() * scale).to(p.dtype)
                p.add_(e)
                self._moved.append((p, e))
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Undo `ascend` (a no-op if nothing moved)."""
        for p, e in self._moved:
            p.sub_(e)
        self._moved = []

    def step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor],
             backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
             apply: Callable[[torch.optim.Optimizer], None] | None = None,
             module: nn.Module | None = None) -> torch.Tensor:
        """One full SAM update: closure() computes the loss (a forward pass); backward(loss) its
        gradients; apply(optimizer) the optimizer step (default optimizer.step()). module: the network,
        whose batch-norm statistics are frozen during the second pass. Returns the first pass's loss."""
        optimizer.zero_grad(set_to_none=True)
        loss = closure()
        backward(loss)
        if self.ascend():
            optimizer.zero_grad(set_to_none=True)
            with frozen_norm_statistics(module) if module is not None else contextlib.nullcontext():
                backward(closure())
            self.restore()
        (apply or (lambda opt: opt.step()))(optimizer)
        return loss
