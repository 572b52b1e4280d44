"""The driver of long phases: seed-vmapped programs run chunk by chunk from the host, with a
progress bar and wall-clock timings.

`over_seeds(fn, *args, **static)` runs a pure per-seed function vmapped over the leading seed
axis of its arguments, as one program compiled once per (function, static arguments, shapes).
`run_chunks` calls a phase's chunk (usually such a program) once per chunk, ticking a tqdm bar
between chunks and timing the phase. Chunks are a host loop, not a scan, only so that the bar
can move: every chunk derives its keys from fold_in(key, step), so the results do not depend on
the chunking.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
from tqdm.auto import tqdm

Chunk = Callable[[Any, int, int], tuple[Any, Any]]  # (carry, chunk index, steps) -> (carry, out)


def over_seeds(fn: Callable, *args, in_axes=0, **static):
    """fn(*args, **static) for every seed: `jax.vmap(fn, in_axes)` over the arguments' leading
    axis, jitted with `static` as compile-time constants. `fn` must be a module-level function
    (or another object that stays the same across calls), or every call compiles again."""
    return _seed_program(fn, tuple(sorted(static.items())), in_axes, *args)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _seed_program(fn, static, in_axes, *args):
    return jax.vmap(functools.partial(fn, **dict(static)), in_axes=in_axes)(*args)


class PhaseClock:
    """`lap(phase, ready)` adds the wall seconds since the last lap to timings[phase], once the
    arrays of `ready` are computed. Without a timings dict it does nothing, and never waits."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, phase: str, ready) -> None:
        if self.timings is None:
            return
        jax.block_until_ready(ready)
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
        self.last = now


def run_chunks(
    chunk: Chunk,
    carry,
    sizes: Sequence[int],
    *,
    desc: str,
    progress: bool = True,
    clock: PhaseClock | None = None,
    phase: str | None = None,
    postfix: Callable[[Any], dict] | None = None,
) -> tuple[Any, list]:
    """A phase of sum(sizes) steps: carry, out = chunk(carry, i, n) for the i-th chunk of n
    steps, the bar `desc` ticking n after each. Returns the last carry and every chunk's out.

    `postfix(out)` gives the bar's postfix (e.g. the loss); with a clock, each chunk's seconds
    (since the clock's last lap, which may be inside the chunk) go to timings[phase].
    """
    outs = []
    with tqdm(total=sum(sizes), desc=desc, disable=not progress, leave=False) as bar:
        for i, n in enumerate(sizes):
            carry, out = chunk(carry, i, n)
            outs.append(out)
            bar.update(n)
            if postfix is not None and progress:
                bar.set_postfix(**postfix(out))
            if clock is not None:
                clock.lap(phase or desc, (carry, out))
    return carry, outs
