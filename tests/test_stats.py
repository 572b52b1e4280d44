"""The statistics `report` prints, against hand computations on fixed numbers."""

import numpy as np
import pytest

from edis_jax.report import stats


def test_iqm_is_the_mean_of_the_middle_half_and_its_ci_is_the_seed_bootstrap():
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 1000.0])
    assert stats.iqm(values) == pytest.approx((30 + 40 + 50 + 60) / 4)  # 2 cut at each end
    low, high = stats.bootstrap_ci(values)
    assert values.min() <= low < 45.0 < high <= values.max()
    # by hand: resample the 8 seeds with replacement, 2000 times, fixed seed; 2.5/97.5 percentiles
    idx = np.random.default_rng(stats.BOOTSTRAP_SEED).integers(0, 8, size=(2000, 8))
    draws = [np.sort(values[row])[2:6].mean() for row in idx]
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    assert stats.bootstrap_ci(values) == (low, high)  # reproducible
    same = np.full(8, 42.5)
    assert stats.bootstrap_ci(same) == pytest.approx((42.5, 42.5))
    assert stats.iqm_ci(same) == (42.5, 42.5, 42.5)


def test_difference_ci_resamples_each_arm_on_its_own():
    a = np.array([50.0, 60.0, 70.0, 80.0, 90.0, 20.0, 65.0, 55.0])
    b = np.array([40.0, 45.0, 50.0, 10.0, 48.0, 52.0])  # arms may differ in seeds
    diff, low, high = stats.difference_ci(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    # by hand: one generator, arm a's 2000 x 8 indices drawn first, then arm b's 2000 x 6
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
    idx_a, idx_b = rng.integers(0, 8, size=(2000, 8)), rng.integers(0, 6, size=(2000, 6))
    draws = a[idx_a].mean(1) - b[idx_b].mean(1)
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    assert low < diff < high
    assert stats.difference_ci(np.full(4, 3.0), np.full(5, 1.0)) == pytest.approx((2.0, 2.0, 2.0))
    assert all(np.isnan(stats.difference_ci([], b)))


def test_ratio_and_mean_intervals_resample_as_the_difference_does():
    a = np.array([50.0, 60.0, 70.0, 80.0, 90.0, 20.0, 65.0, 55.0])
    b = np.array([40.0, 45.0, 50.0, 10.0, 48.0, 52.0])
    ratio, low, high = stats.ratio_ci(a, b)
    assert ratio == pytest.approx(a.mean() / b.mean())
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)  # the same draws as difference_ci's
    idx_a, idx_b = rng.integers(0, 8, size=(2000, 8)), rng.integers(0, 6, size=(2000, 6))
    draws = a[idx_a].mean(1) / b[idx_b].mean(1)
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    assert stats.ratio_ci(np.full(3, 3.0), np.full(2, 2.0)) == pytest.approx((1.5, 1.5, 1.5))
    # A baseline whose mean gain is 0 gives an infinite ratio, not an error.
    assert stats.ratio_ci([1.0, 2.0], [0.0, 0.0])[0] == np.inf
    mean, low, high = stats.mean_ci(a)
    idx = np.random.default_rng(stats.BOOTSTRAP_SEED).integers(0, 8, size=(2000, 8))
    assert mean == a.mean()
    assert (low, high) == pytest.approx(tuple(np.percentile(a[idx].mean(1), [2.5, 97.5])))
    assert all(np.isnan(stats.mean_ci([])))


@pytest.mark.parametrize(
    "seeds, spreads",
    [((3, 3), (1.0, 1.0)), ((4, 4), (5.0, 5.0)), ((6, 6), (8.6, 14.5)), ((8, 6), (5.0, 20.0))],
)
def test_detectable_difference_is_detected_with_the_stated_power(seeds, spreads):
    """Welch's test of arms whose means differ by the detectable difference rejects 80% of the
    time, checked by an independent simulation (another seed). 20000 draws: the rate's binomial
    std is 0.003, the function's own simulation adds as much, so 0.015 is about 3.5 stds. At 3
    seeds per arm the t-quantile formula's difference would give 0.69 (measured), outside it."""
    import scipy.stats

    rng = np.random.default_rng(123)

    def exactly(n, spread):  # seeds whose sample std is exactly `spread`
        x = rng.standard_normal(n)
        return (x - x.mean()) / x.std(ddof=1) * spread

    a, b = exactly(seeds[0], spreads[0]), exactly(seeds[1], spreads[1])
    detectable = stats.detectable_difference(a, b)
    draws = 20_000
    sim_a = rng.normal(detectable, spreads[0], (draws, seeds[0]))
    sim_b = rng.normal(0.0, spreads[1], (draws, seeds[1]))
    p = scipy.stats.ttest_ind(sim_a, sim_b, axis=1, equal_var=False).pvalue
    assert np.mean(p < stats.SIGNIFICANCE) == pytest.approx(stats.POWER, abs=0.015)
    # It depends on the spreads only, and shrinks at least as 1 / sqrt(seeds) (faster at few
    # seeds, where the t quantiles shrink too: 0.29x for 3 -> 12 seeds).
    assert stats.detectable_difference(a + 100.0, b) == pytest.approx(detectable, rel=1e-9)
    four_times = stats.detectable_difference(np.tile(a, 4), np.tile(b, 4))
    assert 0.25 * detectable < four_times < 0.5 * detectable


def test_detectable_difference_is_undefined_without_two_seeds_or_spread():
    assert np.isnan(stats.detectable_difference([1.0], [1.0, 2.0]))
    assert np.isnan(stats.detectable_difference([1.0, 1.0], [2.0, 2.0]))
    assert np.isnan(stats.detectable_difference([1.0, np.nan], [2.0, 3.0]))  # a diverged seed
    assert stats.detectable_difference([1.0, 1.0], [2.0, 3.0]) > 0  # one arm's spread will do
