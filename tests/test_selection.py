"""datagen/selection.py: the expert's plateau rule and the search for the medium policy."""

import numpy as np

from edis_jax.datagen import selection


def test_plateau_rule_on_made_up_evaluation_curves():
    flat = [-150.0] * 12
    # Stops once there are W evaluations after the first, none better: at evaluation W + 1.
    assert [selection.plateau(flat[:n], 3, 0.01) for n in range(1, 7)] == [False] * 3 + [True] * 3
    assert selection.plateau(flat[:3], 2, 0.01) and not selection.plateau(flat[:2], 2, 0.01)
    # A rising curve never stops, slowing down (sqrt) or not, nor one that jumped 3 evals ago.
    rising = np.sqrt(np.arange(60.0)) * 100.0 - 1200.0
    assert not any(selection.plateau(rising[:n], 3, 0.01) for n in range(1, 61))
    assert not any(selection.plateau(np.arange(float(n)), 3, 0.01) for n in range(1, 61))
    assert not selection.plateau([-1200, -1100, -300, -150, -150], 3, 0.01)
    # SAC on Pendulum: learns, then flat within the tolerance (1% of the 1380 spread = 13.8);
    # it stops three evaluations after its last real gain.
    curve = [-1490, -1256, -152, -110, -109, -108.3, -108.6, -108.0, -109.0]
    stops = [n for n in range(1, len(curve) + 1) if selection.plateau(curve[:n], 3, 0.01)]
    assert stops[0] == 7 and not selection.plateau(curve[:7], 3, 0.001)
    # The window grows to a quarter of the run: a slow learner whose last gain is evaluation 36
    # stops at evaluation 47 (window 11), not 39 (window 3).
    late = [float(min(i, 35)) for i in range(60)]
    stops = [n for n in range(1, 61) if selection.plateau(late[:n], 3, 0.01)]
    assert stops[0] == 47
    # The builder's stop ignores evaluations made before learning starts (random actions).
    stop = selection.plateau_stop(3, 0.01, after=5000)
    assert not stop([(1000, -1500.0), (2000, -1500.0), (3000, -1500.0), (4000, -1500.0)])
    assert stop([(6000, -900.0), (7000, -900.0), (8000, -900.0), (9000, -900.0)])


def test_medium_policy_closest_to_the_target_found_by_bisection():
    assert selection.closest_to_target({0: -1000.0, 3: -860.0, 5: -700.0, 8: -200.0}, -850) == 3
    assert selection.closest_to_target({2: -860.0, 1: -840.0}, -850) == 1  # tie: less trained
    # Policies 0..8 of one evaluation interval; 0 (the evaluation before) and 8 are known.
    curve = [-1200, -1100, -1000, -900, -800, -600, -400, -300, -200]
    asked = []

    def evaluate(i):
        asked.append(i)
        return curve[i]

    known = selection.bisect_crossing({0: -1200, 8: -200}, -850, evaluate)
    assert asked == [4, 2, 3]  # log2(8) evaluations, ending at a straddling pair (3, 4)
    assert known == {i: curve[i] for i in (0, 2, 3, 4, 8)}
    assert selection.closest_to_target(known, -850) == 3  # -900 and -800 tie: the earlier
    # The first interval: policy 0 (the untrained one) is not known, and may be the answer.
    asked.clear()
    known = selection.bisect_crossing({8: -200}, -1500, evaluate)
    assert asked == [3, 1, 0] and selection.closest_to_target(known, -1500) == 0
