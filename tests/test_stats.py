"""The statistics `report` prints, against hand computations on fixed numbers."""

import numpy as np
import pytest

from edis_jax import stats


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
