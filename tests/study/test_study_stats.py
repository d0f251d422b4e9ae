"""Welch's t-test and TOST against worked examples computed independently here."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as sps

from imgsteal.errors import ImgstealError
from imgsteal.study.stats import TostResult, WelchResult, pooled_sd, tost, welch

# A worked example small enough to do with fractions by hand:
# a: mean 5, sum of squared deviations 32 -> s_a^2 = 32/7;  b: mean 2, s_b^2 = 1.
A = [2, 4, 4, 4, 5, 5, 7, 9]
B = [1, 2, 3]


def test_welch_worked_example_by_hand():
    var_a, var_b = Fraction(32, 7), Fraction(1)
    qa, qb = var_a / 8, var_b / 3  # 4/7 and 1/3
    se2 = qa + qb  # 19/21
    df = se2**2 / (qa**2 / 7 + qb**2 / 2)
    t = 3 / math.sqrt(se2)

    r = welch(A, B)
    assert isinstance(r, WelchResult)
    assert (r.mean_a, r.mean_b, r.n_a, r.n_b) == (5.0, 2.0, 8, 3)
    assert r.std_a == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert r.std_b == pytest.approx(1.0, rel=1e-12)
    assert r.t == pytest.approx(t, rel=1e-12)
    assert r.df == pytest.approx(float(df), rel=1e-12)
    assert (round(r.t, 4), round(r.df, 4)) == (3.1539, 8.0095)  # the decimals a reader can check on paper
    assert r.p == pytest.approx(2 * sps.t.sf(t, float(df)), rel=1e-10)
    assert 0.01 < r.p < 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy_ttest_ind(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, size=37)
    b = np.clip(rng.integers(1, 6, size=23) + rng.integers(-1, 2, size=23), 1, 5)
    ref = sps.ttest_ind(a, b, equal_var=False)
    r = welch(a, b)
    assert r.t == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
    if hasattr(ref, "df"):
        assert r.df == pytest.approx(ref.df, rel=1e-10)
    swapped = welch(b, a)
    assert swapped.t == pytest.approx(-r.t) and swapped.p == pytest.approx(r.p)


def _tost_by_hand(a, b, bound_d, alpha):
    """TOST from the textbook formulas, written out independently of the library."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    va, vb = a.var(ddof=1), b.var(ddof=1)
    sd_pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    delta = bound_d * sd_pooled
    se = math.sqrt(va / na + vb / nb)
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    diff = a.mean() - b.mean()
    p_lower = 1 - sps.t.cdf((diff + delta) / se, df)  # H0: diff <= -delta
    p_upper = sps.t.cdf((diff - delta) / se, df)  # H0: diff >= +delta
    return sd_pooled, delta, p_lower, p_upper, diff, se, df


def test_tost_worked_example_by_hand():
    a = [3, 4, 5, 4, 3, 5, 4, 4, 2, 5, 4, 3]
    b = [4, 3, 5, 4, 4, 3, 5, 4, 3, 4]
    sd_pooled, delta, p_lower, p_upper, diff, se, df = _tost_by_hand(a, b, 0.8, 0.05)
    r = tost(a, b, bound_d=0.8, alpha=0.05)
    assert isinstance(r, TostResult)
    assert r.pooled_sd == pytest.approx(sd_pooled, rel=1e-12)
    assert r.bound_raw == pytest.approx(delta, rel=1e-12)
    assert r.p_lower == pytest.approx(p_lower, rel=1e-9)
    assert r.p_upper == pytest.approx(p_upper, rel=1e-9)
    assert r.p == pytest.approx(max(p_lower, p_upper), rel=1e-9)
    assert r.t_lower == pytest.approx((diff + delta) / se) and r.t_upper == pytest.approx((diff - delta) / se)
    assert r.df == pytest.approx(df)
    assert r.equivalent == (max(p_lower, p_upper) < 0.05)
    assert pooled_sd(a, b) == pytest.approx(sd_pooled)


@pytest.mark.parametrize("seed", range(6))
def test_tost_verdict_equals_confidence_interval_rule(seed):
    """TOST at level alpha is equivalent to the (1 - 2 alpha) CI lying inside the bounds."""
    rng = np.random.default_rng(100 + seed)
    a = rng.integers(1, 6, size=int(rng.integers(20, 200)))
    b = rng.integers(1, 6, size=int(rng.integers(20, 200)))
    bound_d = float(rng.uniform(0.1, 0.6))
    _, delta, _, _, diff, se, df = _tost_by_hand(a, b, bound_d, 0.05)
    half_width = sps.t.ppf(0.95, df) * se
    inside = (diff - half_width > -delta) and (diff + half_width < delta)
    assert tost(a, b, bound_d=bound_d).equivalent == inside


def test_smallest_equivalent_bound_is_where_p_reaches_alpha():
    rng = np.random.default_rng(7)
    a = rng.integers(1, 6, size=150)
    b = rng.integers(1, 6, size=140)
    r = tost(a, b, bound_d=0.3, alpha=0.05)
    d_min = r.smallest_equivalent_bound_d
    assert r.smallest_equivalent_bound_raw == pytest.approx(d_min * r.pooled_sd)
    assert tost(a, b, bound_d=d_min, alpha=0.05).p == pytest.approx(0.05, rel=1e-6)
    assert tost(a, b, bound_d=d_min * 1.01).equivalent
    assert not tost(a, b, bound_d=d_min * 0.99).equivalent
    # closed form from the t quantile, as stated in the docs
    _, _, _, _, diff, se, df = _tost_by_hand(a, b, 0.3, 0.05)
    assert r.smallest_equivalent_bound_raw == pytest.approx(abs(diff) + sps.t.ppf(0.95, df) * se)


def _sample_with(mean: float, std: float, n: int) -> np.ndarray:
    """n values with exactly this mean and sample std (ddof=1)."""
    z = sps.norm.ppf((np.arange(n) + 0.5) / n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + std * z


@pytest.mark.parametrize(
    "task, v, a, welch_significant",
    [
        # Paper, section 5.4 / Figure 6 (125 participants x 10 ratings per model and task).
        ("Monet-to-Photo", (3.20, 1.59), (2.91, 1.76), True),
        ("Selfie-to-Anime", (3.11, 1.76), (3.08, 1.50), False),
    ],
)
def test_paper_summary_numbers_sanity(task, v, a, welch_significant):
    n = 1250
    fv, fa = _sample_with(*v, n), _sample_with(*a, n)
    w = welch(fv, fa)
    assert (w.p < 0.05) == welch_significant
    r = tost(fv, fa, bound_d=0.3)
    # The paper: d = 0.3 is about +-0.50 (Selfie-to-Anime) / +-0.49 (Monet-to-Photo) rating points.
    assert 0.47 < r.bound_raw < 0.52
    assert r.equivalent  # non-equivalence rejected in both settings
    assert r.smallest_equivalent_bound_d < 0.3


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ImgstealError, match="at least 2"):
        welch([3], [1, 2])
    with pytest.raises(ImgstealError, match="zero variance"):
        welch([3, 3, 3], [3, 3])
    with pytest.raises(ImgstealError, match="NaN"):
        tost([1, float("nan")], [1, 2])
    with pytest.raises(ImgstealError, match="must be > 0"):
        tost([1, 2, 3], [2, 3, 4], bound_d=0)
    with pytest.raises(ImgstealError, match="alpha"):
        tost([1, 2, 3], [2, 3, 4], alpha=1.5)
