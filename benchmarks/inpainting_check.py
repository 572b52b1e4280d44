"""`python -m benchmarks.inpainting_check`: how good are the next states the sampler draws by
inpainting, the way every CEP negative of E_t is drawn?

The generator is trained as `edis-jax diagnose --retrains R --seed S` trains it (the shipped
Hopper-v5 medium data offline, a run's online buffer as the target, that run's seed-0 policy).
Then (s, a) come from a free unguided chain, and s' and r from a second chain inpainted on them,
unguided and guided by E_t alone at each w_t. The dynamics error of each set (the simulator set
to each row's (s, a)) is printed against the free chain's own. docs/generator_fidelity.md
records the results.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from edis_jax import agents, config, diagnose, generator, make_run
from edis_jax.config import presets
from edis_jax.data.datasets import load_dataset
from edis_jax.data.transition import vector_slices
from edis_jax.diffusion import sampler
from edis_jax.diffusion.sampler import Condition
from edis_jax.envs.simulators import dynamics_error


def run(target_run: str, *, preset: str = "cpu", retrains: int = 3, seed: int = 0,
        n: int = 2048, scales=(0.0, 0.3, 1.0, 3.0), inpainting: str = "clean",
        resamples: int = 1) -> dict:  # fmt: skip
    """{"free": dynamics error of the free chain, "two_stage": {w_t: dynamics error}}.
    `inpainting` and `resamples` are the generator's `--diffusion.inpainting` and
    `--diffusion.inpaint-resamples`: both the second chain and the CEP negatives E_t is trained
    on use them."""
    cfg = config.with_values(
        presets.preset(preset),
        {"diffusion.inpainting": inpainting, "diffusion.inpaint_resamples": resamples},
    )
    offline = load_dataset(make_run.DATASET).transitions
    target, env_id = diagnose.load_target(target_run)
    _, agent = diagnose.load_policy(target_run)
    _, k_create, k_retrain, k_sample = jax.random.split(jax.random.PRNGKey(seed), 4)
    gen = generator.create(k_create, offline.obs_dim, offline.act_dim, cfg.diffusion, cfg.energy)
    gen, _, _ = diagnose.train_generator(
        gen, offline, target, agents.policy(agent), k_retrain, retrains, False
    )
    last_fixed = vector_slices(offline.obs_dim, offline.act_dim)["action"].stop
    fixed = jnp.arange(gen.diffusion.data_dim) < last_fixed

    @jax.jit
    def free(key):
        return sampler.sample(gen.diffusion, key, n)[0]

    @jax.jit
    def inpainted(guidance, first, key):
        condition = Condition(first, jnp.broadcast_to(fixed.astype(jnp.float32), first.shape))
        return sampler.sample(gen.diffusion, key, n, guidance=guidance, condition=condition)[0]

    def error(x) -> float:
        rows = jax.device_get(generator.to_transitions(gen, x, None)[0])
        return dynamics_error(env_id, rows.obs, rows.action, rows.next_obs)

    first = free(k_sample)
    transition = diagnose.guided(gen, "transition")
    result = {"free": error(first), "two_stage": {}}
    for w in scales:
        weights = jnp.asarray([0.0, 0.0, w], jnp.float32)
        guidance = transition.replace(scales=weights).guidance if w > 0 else None
        result["two_stage"][w] = error(inpainted(guidance, first, jax.random.fold_in(k_sample, 1)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="runs/make_run/iql", help="a run directory")
    parser.add_argument("--preset", choices=("tiny", "cpu"), default="cpu")
    parser.add_argument("--retrains", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--inpainting", choices=("clean", "noised"), default="clean")
    parser.add_argument("--resamples", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(
        args.target, preset=args.preset, retrains=args.retrains, seed=args.seed, n=args.n,
        inpainting=args.inpainting, resamples=args.resamples,
    )  # fmt: skip
    print(f"free chain: dynamics error {result['free']:.4f}")
    for w, e in result["two_stage"].items():
        change = 100 * (e / result["free"] - 1)
        print(f"(s, a) from it, s' and r inpainted, E_t w_t = {w}: {e:.4f} ({change:+.1f}%)")


if __name__ == "__main__":
    main()
