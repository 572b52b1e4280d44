"""datagen/behaviour.py: online SAC on one env (the builder's behaviour learner) records its
episodes, stops when asked and continues a given agent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax.config.agent_configs import SACConfig
from edis_jax.datagen import behaviour
from edis_jax.datagen.behaviour import train_sac_online
from edis_jax.datagen.selection import reaches
from edis_jax.train import jax_online


@pytest.mark.parametrize("backend", ["gymnasium", "jax"])
def test_train_sac_online_records_episodes_and_stops_at_the_target(backend):
    config = SACConfig(hidden_dims=(32, 32), start_steps=100)
    run = train_sac_online(
        "Pendulum-v1",
        450,
        config=config,
        batch_size=32,
        eval_every=200,
        eval_episodes=2,
        record_episodes=True,
        progress=False,
        env_backend=backend,
    )
    assert run.steps == 450 and [s for s, _ in run.evals] == [200, 400, 450]
    assert len(run.episodes) == 2 and len(run.train_returns) == 2  # 200-step episodes
    episode = run.episodes[0]
    assert episode["observations"].shape == (201, 3) and episode["actions"].shape == (200, 1)
    assert not episode["terminations"].any() and episode["truncations"][-1]
    assert np.abs(episode["actions"]).max() <= 1.0
    # The recorded observations chain: the last one is the final next observation.
    assert run.train_returns[0][1] == pytest.approx(float(episode["rewards"].sum()), rel=1e-5)

    # Continuing an existing agent; a target below any return stops at the first evaluation.
    more = train_sac_online(
        "Pendulum-v1",
        450,  # the first run's budget: the same buffer shape, no second compile
        agent=run.agent,
        batch_size=32,
        eval_every=100,
        eval_episodes=1,
        stop_when=reaches(-1e9),
        progress=False,
        env_backend=backend,
    )
    assert more.steps == 100 and len(more.evals) == 1
    assert jax.tree.leaves(run.agent)[0] is not None  # the caller's agent is still usable
    run.agent.act(jax.random.PRNGKey(0), jnp.zeros(3), True)
    if backend == "jax":
        _assert_episodes_are_the_jax_envs(run.episodes)


def _assert_episodes_are_the_jax_envs(episodes):
    """Each recorded episode is what the JAX Pendulum gives for its actions from its first
    observation (Pendulum's observation is its whole state), read back from the replay."""
    env = jax_online.training_env("Pendulum-v1")
    bounds = jax_online.ActionBounds.of("Pendulum-v1")
    for episode in episodes:
        state = env.state_from_obs(jnp.asarray(episode["observations"][0]))
        for i, action in enumerate(episode["actions"]):
            unit = jax_online.to_env_units(jnp.asarray(action), bounds)
            state, obs, reward, terminated, truncated = env.step(state, unit)
            np.testing.assert_allclose(obs, episode["observations"][i + 1], atol=1e-5)
            assert float(reward) == pytest.approx(float(episode["rewards"][i]), abs=1e-4)
            assert bool(truncated) == bool(episode["truncations"][i])


def test_jax_backend_reads_its_episodes_back_after_the_replay_wraps(monkeypatch):
    """A replay smaller than the run (a build past MAX_CAPACITY steps): step t is row t mod
    capacity, and a chunk never outruns the rows it reads back. The old code read rows t .. t + n - 1
    and failed with an IndexError on the first chunk past row 150."""
    monkeypatch.setattr(behaviour, "MAX_CAPACITY", 150)
    config = SACConfig(hidden_dims=(32, 32), start_steps=100)
    run = train_sac_online(
        "Pendulum-v1", 450, config=config, batch_size=32, eval_every=200, eval_episodes=1,
        record_episodes=True, progress=False, env_backend="jax",
    )  # fmt: skip
    assert run.steps == 450 and [s for s, _ in run.evals] == [200, 400, 450]
    assert [end for end, _ in run.train_returns] == [200, 400]
    assert len(run.episodes) == 2
    for (_, total), episode in zip(run.train_returns, run.episodes, strict=True):
        assert total == pytest.approx(float(episode["rewards"].sum()), rel=1e-5)
    _assert_episodes_are_the_jax_envs(run.episodes)


def test_jax_backend_is_refused_in_one_line_where_there_is_no_jax_env():
    with pytest.raises(ValueError, match="--env-backend jax: InvertedPendulum-v5 has") as err:
        train_sac_online("InvertedPendulum-v5", 10, env_backend="jax", progress=False)
    assert "\n" not in str(err.value)
