"""Exceptions that mean 'the user must do something', distinct from bugs."""


class ImgstealError(Exception):
    """Base class for expected, user-facing failures."""


class WeightsUnavailableError(ImgstealError):
    """Pretrained weights (VGG19, Inception) could not be loaded; the message says how to supply them."""


class CheckpointError(ImgstealError):
    """A checkpoint is missing, incomplete or of the wrong kind."""
