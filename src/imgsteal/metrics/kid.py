"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² on Inception pool3 features.

    from imgsteal.metrics import kid
    result = kid("outputs/victim", "outputs/surrogate")   # KIDResult(mean=..., std=...)

Kernel: the cubic polynomial k(x, y) = (x·y / d + 1)³. The estimate is averaged over `n_subsets`
random subsets of `subset_size` images per set (drawn without replacement, seeded), and its spread
over subsets is reported as `std`. Unlike FID it is unbiased for small sets, so it is the metric to
trust below ~2048 images. Same features (and cache) as FID.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from imgsteal.metrics.features import ImageSource, inception_features

# Above this many Gram-matrix entries, compute kernels per subset instead of once for all images.
_MAX_PRECOMPUTED_GRAM_ENTRIES = 30_000_000


@dataclass(frozen=True)
class KIDResult:
    """KID estimate: mean and standard deviation of the unbiased MMD² over subsets (feature units²)."""

    mean: float
    std: float
    subset_size: int
    n_subsets: int

    def __str__(self) -> str:
        return f"{self.mean:.6f} ± {self.std:.6f}"


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M) matrix of (x·y / D + 1)³, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² from the kernel matrices of two equal-sized samples (m x m each, m >= 2)."""
    m = k_xx.shape[0]
    if m < 2 or k_xx.shape != (m, m) or k_yy.shape != (m, m) or k_xy.shape != (m, m):
        raise ValueError(f"need m x m kernel matrices with m >= 2, got {k_xx.shape}, {k_yy.shape}, {k_xy.shape}")
    sum_xx = k_xx.sum() - np.trace(k_xx)  # off-diagonal: a sample is not compared with itself
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    subset_size: int | None = None,
    n_subsets: int = 100,
    seed: int = 0,
) -> KIDResult:
    """KID between two feature sets (N1, D) and (N2, D).

    subset_size: images per set in each subset, default min(1000, N1, N2); must be 2..min(N1, N2).
    n_subsets: number of random subsets (default 100). seed: makes the subset draws reproducible.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {f1.shape} and {f2.shape}")
    n = min(len(f1), len(f2))
    m = min(1000, n) if subset_size is None else subset_size
    if not 2 <= m <= n:
        raise ValueError(f"subset_size must be between 2 and {n} (the smaller set), got {m}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")

    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False)) for _ in range(n_subsets)]
    total_gram = len(f1) ** 2 + len(f2) ** 2 + len(f1) * len(f2)
    if total_gram <= _MAX_PRECOMPUTED_GRAM_ENTRIES:
        # Subsets overlap heavily: one kernel evaluation per pair of images, then index.
        g11, g22, g12 = polynomial_kernel(f1, f1), polynomial_kernel(f2, f2), polynomial_kernel(f1, f2)
        values = [mmd2_unbiased(g11[np.ix_(i, i)], g22[np.ix_(j, j)], g12[np.ix_(i, j)]) for i, j in draws]
    else:
        values = [
            mmd2_unbiased(
                polynomial_kernel(f1[i], f1[i]), polynomial_kernel(f2[j], f2[j]), polynomial_kernel(f1[i], f2[j])
            )
            for i, j in draws
        ]
    values_arr = np.asarray(values)
    return KIDResult(mean=float(values_arr.mean()), std=float(values_arr.std()), subset_size=m, n_subsets=n_subsets)


def kid(
    images1: ImageSource,
    images2: ImageSource,
    *,
    subset_size: int | None = None,
    n_subsets: int = 100,
    seed: int = 0,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> KIDResult:
    """KID between two image sets: folders, N x 3 x H x W float tensors in [0, 1], or lists of 3 x H x W.

    Returns KIDResult(mean, std) over subsets (lower = more alike, ~0 for the same distribution; can be
    slightly negative since the estimate is unbiased). Weights and caching as for `fid`.
    """
    options = dict(weights=weights, batch_size=batch_size, device=device, cache=cache, cache_dir=cache_dir)
    features1 = inception_features(images1, **options)
    features2 = inception_features(images2, **options)
    return kid_from_features(features1, features2, subset_size=subset_size, n_subsets=n_subsets, seed=seed)
