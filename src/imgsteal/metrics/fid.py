"""Fréchet Inception Distance (Heusel et al. 2017) between two image sets.

    from imgsteal.metrics import fid
    score = fid("outputs/victim", "outputs/surrogate")            # folders, or N x 3 x H x W tensors in [0, 1]

Features: Inception-v3 pool3 (2048-d) with the standard FID weights (see `imgsteal.metrics.features`),
so scores match pytorch-fid / TTUR given the same weights and images. Lower is closer; 0 for
identical sets. Sets under 2048 images give a biased (too high) FID: a warning says so, and KID
(`imgsteal.metrics.kid`) is the unbiased alternative.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from scipy import linalg

from imgsteal.metrics.features import ImageSource, inception_features

FID_RECOMMENDED_MIN_IMAGES = 2048


class SmallSampleWarning(UserWarning):
    """A metric was computed on fewer images than it needs to be unbiased."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), both float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows to estimate a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    # pytorch-fid's route: general matrix square root of the (non-symmetric) product.
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: matrix square root has an imaginary part of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, method: str = "eigh", eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    method="eigh" (default): Tr((sigma1 sigma2)^(1/2)) as the sum of square roots of the eigenvalues
    of sigma1^(1/2) sigma2 sigma1^(1/2), a symmetric PSD matrix with the same spectrum: real by
    construction, exact for singular covariances, and ~10x faster than a general sqrtm at D=2048.
    method="sqrtm": scipy.linalg.sqrtm of the product as pytorch-fid does (eps added to the diagonals
    if the product is singular; a clearly complex result raises ValueError).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if method == "eigh":
        root1 = _sqrt_psd(sigma1)
        middle = root1 @ sigma2 @ root1
        eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away rounding
        trace_covmean = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    elif method == "sqrtm":
        trace_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets, (N1, D) and (N2, D), each N >= 2.

    With fewer images than dimensions the covariances have rank < D; then Tr((sigma1 sigma2)^(1/2))
    equals the nuclear norm of the centred cross-product A1 A2^T / sqrt((N1-1)(N2-1)), an N1 x N2
    problem instead of a D x D one (same value, much cheaper).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {f1.shape} and {f2.shape}")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    dim = f1.shape[1]
    if max(len(f1), len(f2)) >= dim:
        mu1, sigma1 = feature_statistics(f1)
        mu2, sigma2 = feature_statistics(f2)
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
    n1, n2 = len(f1) - 1, len(f2) - 1
    trace_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = f1.mean(0) - f2.mean(0)
    trace1, trace2 = np.einsum("ij,ij->", a1, a1) / n1, np.einsum("ij,ij->", a2, a2) / n2
    return float(diff @ diff + trace1 + trace2 - 2.0 * trace_covmean)


def warn_if_small(n_images: int, label: str) -> None:
    """Warn (SmallSampleWarning) when a set is too small for an unbiased FID."""
    if n_images < FID_RECOMMENDED_MIN_IMAGES:
        warnings.warn(
            f"FID on {label} with {n_images} images (< {FID_RECOMMENDED_MIN_IMAGES}) is biased upwards and not "
            "comparable across set sizes; compare equal-sized sets or use KID (imgsteal.metrics.kid, `--kid`)",
            SmallSampleWarning,
            stacklevel=3,
        )


def fid(
    images1: ImageSource,
    images2: ImageSource,
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> float:
    """FID between two image sets (>= 0, lower = more alike).

    Each set: a folder of images, an N x 3 x H x W float tensor in [0, 1], or a list of 3 x H x W
    tensors. `weights`: FID Inception weights file (default: $IMGSTEAL_INCEPTION_WEIGHTS, then torch
    hub's cache, then a download). Folder features are cached (see `imgsteal.metrics.features`).
    Raises WeightsUnavailableError when no weights are available; warns SmallSampleWarning under 2048 images.
    """
    options = dict(weights=weights, batch_size=batch_size, device=device, cache=cache, cache_dir=cache_dir)
    features1 = inception_features(images1, **options)
    features2 = inception_features(images2, **options)
    warn_if_small(len(features1), "the first set")
    warn_if_small(len(features2), "the second set")
    return fid_from_features(features1, features2)
