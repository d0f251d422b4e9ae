"""Statistics of the user study (paper, section 5.4): Welch's t-test and a TOST equivalence test.

The two samples are the Likert ratings given to F_V's outputs (`a`) and to F_A's outputs (`b`).
Equivalence bounds are given in Cohen's d and turned into rating units with the pooled standard
deviation; the tests themselves use Welch's standard error and degrees of freedom, because the
two groups' variances need not be equal (the paper's reason for using Welch's t-test).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

from imgsteal.errors import ImgstealError


class StatsInputError(ImgstealError):
    """The samples cannot be tested (too few values, not finite, no variance)."""


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b); std are sample std (ddof=1)."""

    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    n_a: int
    n_b: int
    diff: float  # mean_a - mean_b, in rating units
    se: float  # Welch standard error of `diff`
    t: float
    df: float  # Welch-Satterthwaite degrees of freedom
    p: float  # two-sided

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TostResult:
    """Two one-sided Welch t-tests of H0: |mean(a) - mean(b)| >= bound against H1: inside the bounds.

    `bound_raw = bound_d * pooled_sd`. `p_lower` tests H0: diff <= -bound_raw, `p_upper` tests
    H0: diff >= +bound_raw; `p = max(p_lower, p_upper)` and `equivalent = p < alpha`.
    `smallest_equivalent_bound_*` is the narrowest symmetric bound at which equivalence holds at
    `alpha` (the limit: at exactly that bound p == alpha).
    """

    bound_d: float
    bound_raw: float
    pooled_sd: float
    alpha: float
    diff: float
    se: float
    df: float
    t_lower: float
    t_upper: float
    p_lower: float
    p_upper: float
    p: float
    equivalent: bool
    smallest_equivalent_bound_raw: float
    smallest_equivalent_bound_d: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sample(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size < 2:
        raise StatsInputError(f"sample {name} needs at least 2 values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise StatsInputError(f"sample {name} contains NaN or infinite values")
    return arr


def _welch_parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, float]:
    """(diff, se, df, var_a, var_b) with Welch's standard error and Welch-Satterthwaite df."""
    var_a, var_b = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    qa, qb = var_a / a.size, var_b / b.size
    se = math.sqrt(qa + qb)
    if se == 0.0:
        raise StatsInputError("both samples have zero variance; the t statistic is undefined")
    df = (qa + qb) ** 2 / (qa**2 / (a.size - 1) + qb**2 / (b.size - 1))
    return float(a.mean() - b.mean()), se, df, var_a, var_b


def pooled_sd(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)): the standardiser of Cohen's d."""
    a, b = _sample(a, "a"), _sample(b, "b")
    var_a, var_b = np.var(a, ddof=1), np.var(b, ddof=1)
    return float(math.sqrt(((a.size - 1) * var_a + (b.size - 1) * var_b) / (a.size + b.size - 2)))


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> WelchResult:
    """Welch's t-test of two independent samples (e.g. ratings of F_V vs F_A outputs).

    Inputs: two 1-D sequences of finite numbers, at least 2 each, not both constant.
    Returns means, sample std (ddof=1), sizes, t, Welch-Satterthwaite df and the two-sided p-value.
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    diff, se, df, var_a, var_b = _welch_parts(a, b)
    t = diff / se
    p = float(2.0 * sps.t.sf(abs(t), df))
    return WelchResult(
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        std_a=math.sqrt(var_a),
        std_b=math.sqrt(var_b),
        n_a=int(a.size),
        n_b=int(b.size),
        diff=diff,
        se=se,
        t=t,
        df=df,
        p=p,
    )


def check_tost_parameters(bound_d: float, alpha: float) -> None:
    """Raise ImgstealError unless bound_d > 0 and 0 < alpha < 1."""
    if not bound_d > 0:
        raise ImgstealError(f"the equivalence bound (Cohen's d) must be > 0, got {bound_d}")
    if not 0 < alpha < 1:
        raise ImgstealError(f"alpha must be in (0, 1), got {alpha}")


def tost(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    bound_d: float = 0.3,
    alpha: float = 0.05,
) -> TostResult:
    """TOST equivalence test of mean(a) - mean(b) within +-bound_d (Cohen's d), Welch-style.

    `bound_d` > 0 is converted to rating units with the pooled standard deviation; `alpha` in (0, 1)
    is the level of each one-sided test. Returns both t statistics and one-sided p-values, the
    verdict, and the smallest symmetric bound (raw and in d) at which equivalence would hold.
    """
    check_tost_parameters(bound_d, alpha)
    a, b = _sample(a, "a"), _sample(b, "b")
    diff, se, df, _, _ = _welch_parts(a, b)
    sd = pooled_sd(a, b)
    bound_raw = bound_d * sd
    t_lower = (diff + bound_raw) / se
    t_upper = (diff - bound_raw) / se
    p_lower = float(sps.t.sf(t_lower, df))
    p_upper = float(sps.t.cdf(t_upper, df))
    p = max(p_lower, p_upper)
    # Equivalence at bound B needs (B - |diff|) / se >= t_{1-alpha, df}; solve for B.
    smallest_raw = abs(diff) + float(sps.t.ppf(1.0 - alpha, df)) * se
    return TostResult(
        bound_d=float(bound_d),
        bound_raw=bound_raw,
        pooled_sd=sd,
        alpha=float(alpha),
        diff=diff,
        se=se,
        df=df,
        t_lower=t_lower,
        t_upper=t_upper,
        p_lower=p_lower,
        p_upper=p_upper,
        p=p,
        equivalent=bool(p < alpha),
        smallest_equivalent_bound_raw=smallest_raw,
        smallest_equivalent_bound_d=smallest_raw / sd if sd > 0 else math.inf,
    )
