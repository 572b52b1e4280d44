"""Statistics for comparing RL runs over seeds (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice", the rliable method): the interquartile mean (IQM) over seeds with a 95%
percentile bootstrap interval, seeds resampled with replacement within each run (the stratified
bootstrap with one task), the difference of two arms' means with the same kind of interval,
and Welch's t-test between two arms; and the test's power (Colas et al. 2018, "How many random
seeds?"): the smallest difference that arms with these seeds and spreads would detect.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.stats

BOOTSTRAP_DRAWS = 2000  # as in rliable's examples
BOOTSTRAP_SEED = 0  # fixed, so that a report is reproducible
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
POWER = 0.8  # the conventional target (Cohen 1988), as in Colas et al. 2018
POWER_DRAWS = 20_000  # simulated experiments: power within about 0.003 (its binomial std)


def iqm(values, axis: int = -1):
    """Interquartile mean: the mean of the middle 50% of values (scipy's trim_mean, 25% cut)."""
    return scipy.stats.trim_mean(values, 0.25, axis=axis)


def bootstrap_ci(
    values,
    statistic=iqm,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of `statistic` over the last axis (seeds).

    Seeds are resampled with replacement, each as a whole (its full curve if `values` has more
    axes), `draws` times with a fixed numpy seed; the interval is the draws' central
    `confidence` quantiles.
    """
    x = np.asarray(values, float)
    n = x.shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    samples = statistic(x[..., idx], axis=-1)  # (..., draws)
    return _percentile_interval(samples, confidence)


def iqm_ci(values) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) of per-seed values; NaNs if there are none."""
    v = np.asarray(values, float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    low, high = bootstrap_ci(v)
    return (float(iqm(v)), float(low), float(high))


def mean_ci(values) -> tuple[float, float, float]:
    """(mean, CI low, CI high) of per-seed values; NaNs if there are none."""
    v = np.asarray(values, float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    low, high = bootstrap_ci(v, statistic=np.mean)
    return (float(v.mean()), float(low), float(high))


def welch_p(a, b) -> float:
    """Two-sided Welch's t-test p-value (unequal variances); NaN with under 2 seeds or no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy's NaN is the answer
        return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def detectable_difference(
    a, b, power: float = POWER, significance: float = SIGNIFICANCE, draws: int = POWER_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> float:  # fmt: skip
    """The smallest true difference of means that Welch's test (`welch_p`) of two arms with
    these seeds detects (p < `significance`) with probability `power`, each arm's seeds normal
    with the spread measured in it. Simulated: `draws` experiments with a fixed numpy seed, the
    same draws at every difference tried, and bisection on the difference. Exact where formulas
    are not: at 3-4 seeds per arm the t-quantile formula's difference gives Welch's test only
    69-75% power, since its degrees of freedom are estimated too. It shrinks at least as
    1/sqrt(seeds), so a difference d needs at most about seeds * (detectable / d)**2 seeds per
    arm. NaN with under 2 seeds in an arm, a NaN score, or no spread in either."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    if not np.isfinite(sa + sb) or sa + sb == 0:  # a NaN score (a diverged seed) or no spread
        return math.nan
    rng = np.random.default_rng(seed)
    noise_a = sa * rng.standard_normal((draws, len(a)))
    noise_b = sb * rng.standard_normal((draws, len(b)))

    def detected(difference: float) -> float:
        p = scipy.stats.ttest_ind(noise_a + difference, noise_b, axis=1, equal_var=False).pvalue
        return float(np.mean(p < significance))

    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    low, high = 0.0, 4.0 * se
    while detected(high) < power:
        low, high = high, 2.0 * high
    while high - low > 1e-4 * se:
        mid = (low + high) / 2
        low, high = (mid, high) if detected(mid) < power else (low, mid)
    return high


def difference_ci(
    a, b, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), CI low, CI high): a percentile bootstrap interval of the difference,
    each arm's seeds resampled with replacement on their own (the arms are independent strata),
    `draws` times with a fixed numpy seed. NaNs if either arm has no seed."""
    return _two_arm_ci(np.subtract, a, b, draws, seed, confidence)


def ratio_ci(
    a, b, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean(a) / mean(b), CI low, CI high), resampled as difference_ci does; a draw whose
    mean(b) is 0 gives an infinite ratio (an interval that reaches it says so)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _two_arm_ci(np.divide, a, b, draws, seed, confidence)


def _two_arm_ci(combine, a, b, draws, seed, confidence) -> tuple[float, float, float]:
    """combine(mean(a), mean(b)) and its percentile bootstrap interval, each arm's seeds
    resampled on their own; NaNs if either arm has no seed."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx_a = rng.integers(0, a.size, size=(draws, a.size))
    idx_b = rng.integers(0, b.size, size=(draws, b.size))
    low, high = _percentile_interval(
        combine(a[idx_a].mean(axis=1), b[idx_b].mean(axis=1)), confidence
    )
    return (float(combine(a.mean(), b.mean())), float(low), float(high))


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The central `confidence` quantiles of bootstrap draws (last axis)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=-1)
    return low, high
