"""imgsteal: run, measure and defend against model-extraction attacks on image-to-image translation models.

Public image convention everywhere: float tensors N x C x H x W (or C x H x W) in [0, 1], RGB.
"""

__version__ = "0.1.0"
