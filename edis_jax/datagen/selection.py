"""When the behaviour SAC stops and which of its policies a dataset rolls out: the stop rules
(`reaches` a target, `plateau` of the evaluation curve) and the search for the policy whose
return is closest to the medium target (`closest_policy`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

StopRule = Callable[[list[tuple[int, float]]], bool]  # evaluations (step, return) -> stop?


def reaches(target: float) -> StopRule:
    """Stop at the first evaluation at or above `target`."""
    return lambda evals: evals[-1][1] >= target


def plateau_stop(window: int, tol: float, after: int) -> StopRule:
    """Stop at a `plateau` of the evaluations made after step `after`."""
    return lambda evals: plateau([r for step, r in evals if step > after], window, tol)


def plateau(returns, window: int, tol: float) -> bool:
    """Whether an evaluation curve has stopped improving: the best of its last w evaluations
    is at most `tol` x (max - min of all of them) above the best of the ones before, with
    w = max(window, len(returns) // 4) (so patience grows with the run). False until there
    are more than w evaluations."""
    r = np.asarray(returns, np.float64)
    w = max(window, len(r) // 4)
    if len(r) <= w:
        return False
    return bool(r[-w:].max() - r[:-w].max() <= tol * (r.max() - r.min()))


def closest_policy(run, target: float, evaluate: Callable, every: int):
    """The policy of a run stopped at its first evaluation at or above `target` whose return is
    closest to it, from the policies it kept since the evaluation before (run.snapshots):
    (step, agent, return, how it was found)."""
    policies = [*run.snapshots, (run.steps, run.agent)]
    known = {len(policies) - 1: last_eval(run)}
    if len(run.evals) > 1 and policies[0][0] == run.evals[-2][0]:
        known[0] = run.evals[-2][1]  # the evaluation before, below the target
    known = bisect_crossing(known, target, lambda i: evaluate(policies[i][1]))
    best = closest_to_target(known, target)
    how = (
        f"closest to the target of {len(known)} evaluated policies between steps "
        f"{policies[0][0]} and {run.steps} (kept every {every} steps, bisected for the "
        "crossing)"
    )
    return *policies[best], known[best], how


def bisect_crossing(
    known: dict[int, float], target: float, evaluate: Callable[[int], float]
) -> dict[int, float]:
    """Policies 0..n-1 in training order, the last one's return (known[n-1]) at or above
    `target` and possibly the first's below it: evaluate the middle ones by bisection until
    two neighbours straddle the target (a crossing). Returns every return known then."""
    known = dict(known)
    lo = 0 if 0 in known and known[0] < target else -1
    hi = max(known)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        known[mid] = evaluate(mid)
        lo, hi = (lo, mid) if known[mid] >= target else (mid, hi)
    return known


def closest_to_target(returns: dict[int, float], target: float) -> int:
    """The key of the return closest to `target`; on a tie the smaller key (less training)."""
    return min(returns, key=lambda k: (abs(returns[k] - target), k))


def last_eval(run) -> float:
    """A run's last evaluation return (-inf before its first)."""
    return float(run.evals[-1][1]) if run.evals else float("-inf")
