"""Statistics for comparing RL runs over seeds (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice", the rliable method): the interquartile mean (IQM) over seeds with a 95%
percentile bootstrap interval, seeds resampled with replacement within each run (the stratified
bootstrap with one task); Welch's t-test between two arms, with the interval of the difference
of their means that it inverts; and the test's power (Colas et al. 2018, "How many random
seeds?"): the smallest difference that arms with these seeds and spreads would detect.

Means get t intervals, not bootstrap ones: at the few seeds per arm RL runs have, a percentile
bootstrap interval is too narrow (its "95%" interval of a difference of means covered 58% of
the time at 2 seeds per arm, 75% at 3, 86% at 5 and 89% at 8; Welch's covered 94-97%;
benchmarks/interval_coverage.py), and could exclude 0 where Welch's p was 0.15. The IQM has no
such formula; its bootstrap interval shares the shortfall (48%, 73%, 92%, 92%), so read it as a
description of the seeds' spread, and the t interval and p as the test.
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


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, CI low, CI high) of per-seed values: Student's t interval (exact for normal
    seeds). NaNs if there are none; NaN bounds with one seed or no spread."""
    v = np.asarray(values, float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    if v.size < 2 or not v.std() > 0:
        return (float(v.mean()), math.nan, math.nan)
    interval = scipy.stats.ttest_1samp(v, 0.0).confidence_interval(confidence)
    return (float(v.mean()), float(interval.low), float(interval.high))


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


def difference_ci(a, b, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean(a) - mean(b), CI low, CI high): Welch's interval, the one `welch_p` inverts, so it
    excludes 0 exactly where p < 1 - confidence (exact for normal seeds). NaNs if either arm has
    no seed; NaN bounds with one seed in an arm or no spread in either (where p is NaN)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    difference = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2 or not a.std() + b.std() > 0:
        return (difference, math.nan, math.nan)
    test = scipy.stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence)
    return (difference, float(interval.low), float(interval.high))


def ratio_ci(
    a, b, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean(a) / mean(b), CI low, CI high): a percentile bootstrap interval, each arm's seeds
    resampled with replacement on their own (the arms are independent strata), `draws` times
    with a fixed numpy seed; a draw whose mean(b) is 0 gives an infinite ratio (an interval that
    reaches it says so). NaNs if either arm has no seed. A ratio has no t interval: at few seeds
    read it with the module's caveat."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx_a = rng.integers(0, a.size, size=(draws, a.size))
    idx_b = rng.integers(0, b.size, size=(draws, b.size))
    with np.errstate(divide="ignore", invalid="ignore"):  # infinite draws: see above
        ratio = float(np.divide(a.mean(), b.mean()))
        low, high = _percentile_interval(a[idx_a].mean(axis=1) / b[idx_b].mean(axis=1), confidence)
    return (ratio, float(low), float(high))


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The central `confidence` quantiles of bootstrap draws (last axis)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=-1)
    return low, high
