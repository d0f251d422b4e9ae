"""The protocol every output defence implements (the server, the local oracle and the evaluation use it)."""

from __future__ import annotations

from typing import Protocol

import torch


class Defense(Protocol):
    """An output post-processor of the service (watermark, fingerprint, perturbation), applied to every answer.

    apply(key_name, input 3xHxW in [0,1], output 3xH'xW' in [0,1], input sha256) -> (output, label);
    label names what was done (logged in the query log's `defense` column), None when nothing was.
    """

    name: str

    def apply(
        self, key_name: str, input_image: torch.Tensor, output_image: torch.Tensor, input_sha256: str
    ) -> tuple[torch.Tensor, str | None]: ...
