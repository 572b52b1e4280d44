"""Timings of the PyTorch eager reference (torch_diffusion, torch_agents) at given sizes.

Each function builds the reference at the sizes asked, warms it up, and returns the time of
one unit (one sample call, one training step, one update, one online step) in milliseconds.
Where a full measurement would take minutes (the 128-step paper-size sampler on 10k rows) the
caller may time fewer sampler steps: the cost per step is the same at every noise level, so
the result is scaled by the number of denoiser calls and says so.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from benchmarks import torch_agents, torch_diffusion
from benchmarks.harness import time_ms
from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig


def setup(threads: int, seed: int = 0, gpu: bool = False) -> None:
    """Same thread count as XLA, float32; on a GPU machine, CUDA tensors when this PyTorch
    build has CUDA (otherwise the reference runs on the CPU: see `device_label`)."""
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float32)
    if gpu and torch.cuda.is_available():
        torch.set_default_device("cuda")
    torch.manual_seed(seed)
    np.random.seed(seed)


def device_label() -> str:
    """Where the reference runs, for the results file."""
    if torch.get_default_device().type == "cuda":
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu, {torch.get_num_threads()} threads"


def sampler_ms(
    obs_dim: int,
    act_dim: int,
    dcfg: DiffusionConfig,
    ecfg: EnergyConfig,
    n: int,
    guided: bool,
    timed_steps: int | None = None,
) -> tuple[float, str | None]:
    """One call of the sampler for n rows at dcfg.num_steps steps. With `timed_steps` < the
    full count, times that many steps and scales by the ratio of denoiser calls."""
    full = dcfg.num_steps
    steps = full if timed_steps is None else min(timed_steps, full)
    model = torch_diffusion.ElucidatedDiffusion(
        2 * obs_dim + act_dim + 1, dataclasses.replace(dcfg, num_steps=steps)
    )
    model.requires_grad_(False)
    guidance = torch_diffusion.make_energies(obs_dim, act_dim, ecfg)[2] if guided else None
    sample = _synced(lambda: model.sample(n, guidance))
    model.sample(min(n, 32), guidance)  # warm-up: allocator, thread pool, autograd
    ms = time_ms(sample, warmup=0, repeats=1)
    if steps == full:
        return ms, None
    ms *= (2 * full - 1) / (2 * steps - 1)
    return ms, f"ref timed at {steps} of {full} steps, scaled by denoiser calls"


def diffusion_train_ms(data_dim: int, dcfg: DiffusionConfig, steps: int, warmup: int = 3) -> float:
    """Mean time of one training step (batch dcfg.batch_size) over `steps` steps."""
    model = torch_diffusion.ElucidatedDiffusion(data_dim, dcfg)
    data = torch.randn(10_000, data_dim)
    trainer = torch_diffusion.DiffusionTrainer(model, data, dcfg.train_steps)
    return _mean_ms(trainer.step, steps, warmup)


def cep_step_ms(
    obs_dim: int, act_dim: int, dcfg: DiffusionConfig, ecfg: EnergyConfig, steps: int
) -> float:
    """One CEP step over all three energies, negatives from banks shaped as the JAX code's."""
    data_dim = 2 * obs_dim + act_dim + 1
    energies, optimisers, _ = torch_diffusion.make_energies(obs_dim, act_dim, ecfg)
    schedule = torch_diffusion.ElucidatedDiffusion(data_dim, dcfg).schedule()
    sigmas = torch.tensor([s for s, _, _ in schedule[ecfg.level_stride - 1 :: ecfg.level_stride]])
    levels, k = len(sigmas), ecfg.num_negatives
    groups = max(ecfg.negative_bank // k, 1)
    banks = [
        torch.randn(levels, ecfg.negative_bank, data_dim),
        torch.randn(levels, groups, k, data_dim),
        torch.randn(levels, groups, k, data_dim),
    ]
    actor = torch_agents.TanhGaussianActor(obs_dim, act_dim, (256, 256))
    trainer = torch_diffusion.CEPTrainer(
        energies, optimisers, sigmas, ecfg, obs_dim, act_dim, actor
    )
    online, bank_positives = torch.randn(10_000, data_dim), torch.randn(groups, data_dim)
    return _mean_ms(lambda: trainer.step(online, bank_positives, banks), steps, warmup=2)


def agent_update_ms(
    algo: str, cfg, obs_dim: int, act_dim: int, updates: int, batch_size: int = 256
) -> float:
    """Mean time of one update (sample a batch + train) over `updates` updates."""
    agent = torch_agents.AGENTS[algo](obs_dim, act_dim, cfg)
    buffer = torch_agents.ReplayBuffer(obs_dim, act_dim, 100_000).fill_random(
        np.random.default_rng(0)
    )
    return _mean_ms(lambda: agent.train(buffer.sample(batch_size)), updates, warmup=5)


class OnlineStepLoop:
    """One online step of a single seed, CORL's fine-tuning loop: act, env step, store, `utd`
    updates (reset on episode end). Warmed up (3 steps) on creation; `run` in rounds."""

    def __init__(self, env_id: str, algo: str, cfg, utd: int, batch_size: int = 256):
        import gymnasium as gym

        self.env = gym.make(env_id)
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        self.agent = torch_agents.AGENTS[algo](obs_dim, act_dim, cfg)
        self.buffer = torch_agents.ReplayBuffer(obs_dim, act_dim, 100_000).fill_random(
            np.random.default_rng(0)
        )
        self.utd, self.batch_size = utd, batch_size
        self.obs = self.env.reset(seed=0)[0]
        self.run(3)

    def _step(self):
        action = self.agent.actor.act(self.obs)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.add(self.obs, action, reward, next_obs, terminated)
        self.obs = self.env.reset()[0] if terminated or truncated else next_obs
        for _ in range(self.utd):
            self.agent.train(self.buffer.sample(self.batch_size))

    def run(self, steps: int) -> float:
        """ms per step over `steps` steps."""
        return _mean_ms(self._step, steps, warmup=0)

    def close(self) -> None:
        self.env.close()


def _mean_ms(fn, n: int, warmup: int) -> float:
    fn = _synced(fn)
    for _ in range(warmup):
        fn()
    return time_ms(lambda: [fn() for _ in range(n)], warmup=0, repeats=1) / n


def _synced(fn):
    """fn followed by a CUDA synchronise when tensors live on a GPU (kernels run async)."""
    if not torch.cuda.is_available() or torch.get_default_device().type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize())[0]
