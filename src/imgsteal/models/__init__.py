"""Networks only: pure nn.Modules that know nothing of training, data or the CLI.

Every generator takes and returns images in [0, 1] (N x 3 x H x W); any [-1, 1] mapping is internal.
Architectures register under a short name so configs and checkpoints can say `arch: srresnet`.
"""

from imgsteal.models.registry import build_model, register_model, registered_models

__all__ = ["build_model", "register_model", "registered_models"]
