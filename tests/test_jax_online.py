"""--env-backend jax: the online phase and the evaluations with the env inside the compiled program
(train/jax_online.py, train/online_steps.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL_OPTIMISATION, PENDULUM
from flax import struct
from tiny_runs import tiny

from edis_jax import agents, config
from edis_jax.config.agent_configs import SACConfig
from edis_jax.data import buffer
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.returns import returns_to_go
from edis_jax.data.transition import Transition
from edis_jax.envs.jax_env import EnvState, JaxEnv
from edis_jax.train import jax_online, loop
from edis_jax.train import state as S
from edis_jax.train.directory import RunDirError, check_checkpoints_match, read_config
from edis_jax.train.episodes import Episodes
from edis_jax.train.jax_online import discounted_suffix_sums, resolve_backend

# Pendulum-v1's reference returns for normalised scores: a random policy and a solved one.
PENDULUM_REF = {"ref_min_score": -1500.0, "ref_max_score": -150.0}


def read_records(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("discount", [0.99, 0.9])
def test_device_returns_to_go_match_the_host_rule(discount):
    # 1000 steps: at 0.9 the far rewards' weights (0.9^999) underflow float32, which a
    # closed form (powers of the discount) would divide by; the parallel scan never forms them.
    rewards = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    no_end = np.zeros(1000, bool)
    expected = returns_to_go(rewards, no_end, no_end, discount)
    got = np.asarray(discounted_suffix_sums(jax.numpy.asarray(rewards), discount))
    # float32 sums of up to 1000 terms against returns_to_go's float64: a few ulps of |G| <= 100.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)


def test_backend_resolution_and_its_one_line_refusals():
    assert resolve_backend("auto", "Hopper-v5", None) == "gymnasium"  # this is a CPU
    assert resolve_backend("jax", "Pendulum-v1", None) == "jax"
    assert resolve_backend("gymnasium", "Pendulum-v1", None) == "gymnasium"
    for env_id in ("InvertedPendulum-v5", "Ant-v5"):  # none; not exact on MJX
        with pytest.raises(ValueError, match=f"{env_id} has no exact JAX-native version"):
            resolve_backend("jax", env_id, None)
    with pytest.raises(ValueError, match="non-default env arguments.*--env-backend gymnasium"):
        resolve_backend("jax", "Hopper-v5", {"ctrl_cost_weight": 0.1})
    assert resolve_backend("auto", "Hopper-v5", {"ctrl_cost_weight": 0.1}) == "gymnasium"
    with pytest.raises(config.ConfigError, match="--env-backend must be"):
        config.RunConfig(env_backend="gpu")


def test_a_run_written_before_the_flag_reads_as_gymnasium_and_resumes(tmp_path):
    data = config.to_dict(config.RunConfig())
    del data["env_backend"]
    (tmp_path / "checkpoints").mkdir()
    for path in (tmp_path / "config.json", tmp_path / "checkpoints" / "config.json"):
        path.write_text(json.dumps(data))
    cfg = read_config(tmp_path)
    assert cfg.env_backend == "gymnasium"
    check_checkpoints_match(tmp_path, cfg)  # no refusal: its checkpoints were gymnasium's too


def _pendulum_sac(tmp_path, backend: str) -> config.RunConfig:
    from edis_jax.config import presets

    cfg = presets.preset("tiny")
    return cfg.replace(
        algo="sac", dataset=PENDULUM, out=str(tmp_path / backend), offline_steps=0,
        online_steps=2000, seeds=2, edis=False, eval_every=1000, eval_episodes=4,
        log_every=500, checkpoint_every=2000, env_backend=backend, batch_size=64,
        sac=config.dataclasses.replace(cfg.sac, hidden_dims=(64, 64), start_steps=200),
        **PENDULUM_REF,
    )  # fmt: skip


def test_sac_learns_on_the_jax_pendulum_as_on_gymnasiums(datasets_env, tmp_path):
    scores = {}
    for backend in ("gymnasium", "jax"):
        summary = loop.train(_pendulum_sac(tmp_path, backend), progress=False)
        scores[backend] = np.asarray(summary["final_score"]["per_seed"])
        records = read_records(tmp_path / backend)
        start = [r["eval_score"] for r in records if r["step"] == 0 and "eval_score" in r]
        assert np.mean(scores[backend]) > np.mean(start) + 30, (backend, start, scores)
        # Ten 200-step training episodes ended; the last one's return is logged.
        assert all(r["train_return"] is not None for r in records if r["step"] == 2000)
    assert read_config(tmp_path / "jax").env_backend == "jax"
    # 2 seeds x 4 episodes each: the two backends' final scores agree within 25 points
    # (of 100) here; the seed-to-seed spread of either is about 10.
    assert abs(np.mean(scores["jax"]) - np.mean(scores["gymnasium"])) < 25, scores


@pytest.mark.slow
def test_iql_edis_on_the_jax_hopper_retrains_and_resumes_exactly(datasets_env, tmp_path):
    # @slow: 277 s on a clean clone, nearly all compiling (MJX's chunk and evaluation, and the
    # generator's programs at XLA's default level); the Cal-QL-EDIS test below runs the same
    # path on Pendulum in `make test`.
    if os.environ.get(FULL_OPTIMISATION) != "1":
        # At the suite's LLVM -O0 (conftest.py) MJX runs about 50x slower: this test took 366 s
        # so. It runs again in a child process at XLA's default level, here a few seconds
        # beside its compiles.
        env = {**os.environ, FULL_OPTIMISATION: "1"}
        flags = env.pop("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
        if flags.strip():  # a blank XLA_FLAGS stops the child's jax without a word
            env["XLA_FLAGS"] = flags
        test = f"{__file__}::test_iql_edis_on_the_jax_hopper_retrains_and_resumes_exactly"
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert child.returncode == 0, child.stdout[-5000:] + child.stderr[-3000:]
        assert "1 passed" in child.stdout, child.stdout[-2000:]
        return
    straight = tiny(tmp_path, "straight", env_backend="jax", eval_episodes=2)
    summary = loop.train(straight, progress=False)
    assert summary["retrains"] == 1 and read_config(Path(straight.out)).env_backend == "jax"
    killed = straight.replace(out=str(tmp_path / "killed"))
    # Stopped at online step 90: after the checkpoint and retrain at 60, records at 90 written.
    assert loop.train(killed, stop_at_online_step=90, progress=False) is None
    resumed = loop.resume(killed.out, progress=False)
    assert read_records(killed.out) == read_records(straight.out)
    for key in ("final_score", "retrains", "synthetic_updates"):
        assert resumed[key] == summary[key]
    states = [loop.load_run(c.out)[1] for c in (straight, killed)]
    for a, b in zip(*(jax.tree.leaves(s) for s in states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The env is in the state; the online rows of every finished episode hold its
    # returns-to-go (as the host's rule gives them), the running episode's rows still 0.
    state = states[0]
    for seed in range(straight.seeds):
        start = int(state.env.episode_start[seed])
        rewards = np.asarray(state.online.data.reward[seed, :start])
        ends = np.asarray(state.online.data.terminal[seed, :start]).astype(bool)
        assert start > 0
        np.testing.assert_array_equal(state.online.data.mc_return[seed, start:], 0.0)
        expected = np.concatenate(
            [returns_to_go(part, *[np.zeros(len(part), bool)] * 2, straight.agent.discount)
             for part in _episodes(rewards, ends)]
        )  # fmt: skip
        np.testing.assert_allclose(state.online.data.mc_return[seed, :start], expected, atol=1e-4)


def _episodes(rewards, ends) -> list[np.ndarray]:
    """The finished episodes' rewards, split at their terminations (a tiny run's Hopper
    episodes all fall well before the 1000-step time limit)."""
    cuts = list(np.flatnonzero(ends) + 1)
    assert cuts and cuts[-1] == len(rewards)
    return np.split(rewards, cuts[:-1])


def test_an_arm_must_continue_its_baselines_backend(datasets_env, tmp_path):
    base = tiny(tmp_path, "base", edis=False, online_steps=70, env_backend="gymnasium")
    loop.train(base, stop_at_online_step=61, progress=False)
    arm = tiny(tmp_path, "arm", init_from=base.out, init_at="first-retrain", env_backend="jax")
    arm = arm.replace(online_steps=70)
    with pytest.raises(RunDirError, match="stepped its envs with --env-backend gymnasium"):
        loop.train(arm, progress=False)
    assert not Path(arm.out).exists()


def test_calql_edis_published_schedule_on_the_jax_pendulum_resumes_exactly(datasets_env, tmp_path):
    # The schedule whose synthetic rows reach every update, with a retrain after online step 1,
    # and the agent whose critic bound reads the returns-to-go the device writes.
    online = config.OnlineConfig(utd=1, retrain_every=120, num_samples=256, schedule="published")
    straight = tiny(
        tmp_path, "calql", algo="calql", dataset=PENDULUM, env_backend="jax", online=online,
        online_steps=240, **PENDULUM_REF,
    )  # fmt: skip
    summary = loop.train(straight, progress=False)
    assert summary["retrains"] == 2  # after steps 1 and 120
    assert summary["synthetic_updates"] == 239  # every update after the first retrain
    killed = straight.replace(out=str(tmp_path / "calql_killed"))
    assert loop.train(killed, stop_at_online_step=90, progress=False) is None
    assert loop.resume(killed.out, progress=False)["final_score"] == summary["final_score"]
    assert read_records(killed.out) == read_records(straight.out)
    states = [loop.load_run(c.out)[1] for c in (straight, killed)]
    for a, b in zip(*(jax.tree.leaves(s) for s in states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Pendulum's 200-step episodes: the first one ended at step 200 and its rows hold their
    # returns-to-go by the host's rule; the next episode's rows are still 0.
    state = states[0]
    rewards = np.asarray(state.online.data.reward[0, :200])
    no_end = np.zeros(200, bool)
    expected = returns_to_go(rewards, no_end, no_end, straight.agent.discount)
    # float32 sums on the device against returns_to_go's float64: measured within 1e-6 of |G|.
    np.testing.assert_allclose(state.online.data.mc_return[0, :200], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(state.online.data.mc_return[0, 200:240], 0.0)
    assert int(state.env.episode_start[0]) == 200


# --------------------------------------------- the compiled loop's parts on toy envs (no MJX)


def _counting_env_reset(key):
    # Episode length drawn at reset in [2, 14); the episode's id, a float, is in every obs.
    key, draw = jax.random.split(key)
    length, episode_id = jax.random.randint(draw, (), 2, 14), jax.random.uniform(draw)
    physics = jnp.stack([episode_id, length.astype(jnp.float32)])
    return EnvState(physics, jnp.int32(0), key), jnp.stack([0.0, episode_id])


def _counting_env_step(state, action):
    steps = state.steps + 1
    obs = jnp.stack([steps.astype(jnp.float32), state.physics[0]])
    reward = steps.astype(jnp.float32) + 0.0 * action[0]  # the step's number in its episode
    terminated, truncated = steps >= state.physics[1], steps >= COUNTING_TIME_LIMIT
    return state.replace(steps=steps), obs, reward, terminated, truncated


# Observations (step in the episode, episode id); episodes of 2-13 steps, 10 the time limit.
COUNTING_TIME_LIMIT = 10
COUNTING = JaxEnv("Counting", 2, 1, COUNTING_TIME_LIMIT, _counting_env_reset,
                  _counting_env_step, None, None)  # fmt: skip


def test_online_chunks_store_final_observations_terminals_and_returns_across_chunks():
    """What the jax backend stores, chunk after chunk: an autoreset row's next_obs is its
    episode's last observation (not the reset's), terminal is the termination only (a time-limit
    truncation bootstraps), mc_return is each finished episode's returns-to-go (0 while it
    runs), the real buffer's online rows equal the online buffer's, and the carried episode
    bookkeeping (start, running return, last return) is the rows' own."""
    agent = agents.create("sac", jax.random.PRNGKey(1), 2, 1, SACConfig(hidden_dims=(8,)),
                          obs_norm=Normalizer.identity(2), reward_scale=1.0)  # fmt: skip
    row, steps, offline_rows = Transition.zeros(2, 1), 60, 3
    offline = jax.tree.map(lambda x: jnp.broadcast_to(x, (offline_rows, *x.shape)), row)
    state = S.RunState(
        agent=agent, generator=None, real=buffer.from_transitions(offline, offline_rows + steps),
        online=buffer.create(row, steps), synthetic=buffer.create(row, 1),
        weights=jnp.asarray([0.0, 0.5, 0.5]),
    )  # fmt: skip
    keys = jax.random.PRNGKey(5)[None]
    state = jax_online.with_env(jax.tree.map(lambda x: x[None], state), COUNTING, keys)
    for t0, n in [(0, 7), (7, 20), (27, 33)]:  # episodes span the chunks' ends
        state, _ = jax_online.online_chunk(
            state, keys, np.int32(t0), np.int32(n), np.int32(0), env=COUNTING, bounds=None,
            returns=jax_online.ReturnRule(1.0), utd=0, batch_size=4,
        )  # fmt: skip
    d = jax.tree.map(lambda x: np.asarray(x[0]), state.online.data)
    step_of, episode_of = d.next_obs[:, 0], d.next_obs[:, 1]
    ended = (d.terminal > 0.5) | (step_of == COUNTING_TIME_LIMIT)
    ends = np.flatnonzero(ended)
    assert len(ends) >= 5
    np.testing.assert_array_equal(d.reward, step_of)
    np.testing.assert_array_equal(episode_of, d.obs[:, 1])  # next_obs: the same episode's
    for t in range(steps - 1):
        if ended[t]:  # the next row starts a new episode at its reset observation
            assert d.obs[t + 1, 0] == 0.0 and d.obs[t + 1, 1] != episode_of[t]
        else:
            np.testing.assert_array_equal(d.obs[t + 1], d.next_obs[t])
    # Ends before the time limit are terminations; some episodes are truncated at it and
    # bootstrap (terminal 0).
    assert (d.terminal[ended & (step_of < COUNTING_TIME_LIMIT)] == 1.0).all()
    assert ((step_of == COUNTING_TIME_LIMIT) & (d.terminal == 0.0)).any()
    expected, start = np.zeros(steps, np.float32), 0
    for end in ends:
        expected[start : end + 1] = np.cumsum(d.reward[start : end + 1][::-1])[::-1]
        start = end + 1
    np.testing.assert_array_equal(d.mc_return, expected)  # the tail's unfinished episode: 0
    real = jax.tree.map(lambda x: np.asarray(x[0, offline_rows:]), state.real.data)
    np.testing.assert_array_equal(real.mc_return, d.mc_return)
    np.testing.assert_array_equal(real.next_obs, d.next_obs)
    carry = jax.tree.map(lambda x: np.asarray(x[0]), state.env)
    assert int(carry.episode_start) == ends[-1] + 1
    assert float(carry.episode_return) == d.reward[ends[-1] + 1 :].sum()
    assert float(carry.last_return) == d.reward[ends[-2] + 1 : ends[-1] + 1].sum()


@pytest.mark.parametrize("fail_reward", [None, -1.0])
def test_device_returns_to_go_of_finished_episodes_match_the_host_with_shift_and_failures(
    fail_reward,
):
    """jax_online._finish_episode, step by step, against the gymnasium backend's Episodes on
    the same rewards: episodes of 1-16 steps (the time limit), a reward shift, and (Cal-QL's
    sparse rule) episodes that end on the fail reward; the offline rows stay untouched."""
    rng = np.random.default_rng(0)
    steps, longest, offline_rows, discount, shift = 120, 16, 7, 0.9, 0.25
    rewards = rng.normal(size=steps).astype(np.float32)
    ends, t = np.zeros(steps, bool), 0
    while (t := t + int(rng.integers(1, longest + 1))) <= steps:
        ends[t - 1] = True
        if fail_reward is not None and rng.random() < 0.4:
            rewards[t - 1] = fail_reward
    row = Transition.zeros(2, 1)
    offline = jax.tree.map(lambda x: jnp.broadcast_to(x, (offline_rows, *x.shape)), row)
    s = S.RunState(
        agent=None, generator=None, real=buffer.from_transitions(offline, offline_rows + steps),
        online=buffer.create(row, steps), synthetic=buffer.create(row, 1), weights=jnp.zeros(3),
    )  # fmt: skip
    rule = jax_online.ReturnRule(discount, shift, fail_reward)
    finish = jax.jit(lambda s, start, t, end: jax_online._finish_episode(s, start, t, end, rule, longest))  # fmt: skip
    host, expected, start = Episodes(1, discount, shift, fail_reward), np.zeros(steps), 0
    for t in range(steps):
        written = row.replace(reward=jnp.float32(rewards[t]))
        s = s.replace(online=buffer.add(s.online, written), real=buffer.add(s.real, written))
        s = finish(s, jnp.int32(start), jnp.int32(t), jnp.bool_(ends[t]))
        start = t + 1 if ends[t] else start
        if (done := host.step(t, [rewards[t]], [ends[t]])) is not None:
            rows, values = done[0][0], done[1][0]
            expected[rows[rows < steps]] = values[rows < steps]
    got = np.asarray(s.online.data.mc_return)
    assert (got[np.flatnonzero(ends)[-1] + 1 :] == 0).all() and np.abs(expected).max() > 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(s.real.data.mc_return[offline_rows:]), got)
    assert (np.asarray(s.real.data.mc_return[:offline_rows]) == 0).all()


class _ConstantAgent(struct.PyTreeNode):
    action: jax.Array  # (seeds,): each seed's agent acts this value everywhere

    def act(self, key, obs, deterministic=False):
        return jnp.zeros((1,)) + self.action


def _one_per_step_reset(key):
    key, draw = jax.random.split(key)
    return EnvState(jax.random.randint(draw, (), 1, 30), jnp.int32(0), key), jnp.zeros(2)


def _one_per_step(state, action):
    steps = state.steps + 1
    reward = jnp.float32(1.0) + 0.0 * action[0]
    return state.replace(steps=steps), jnp.zeros(2), reward, steps >= state.physics, steps >= 25


# Reward 1 per step; an episode terminates after 1-29 steps drawn at reset, truncated at 25.
ONE_PER_STEP = JaxEnv("OnePerStep", 2, 1, 25, _one_per_step_reset, _one_per_step, None, None)


def test_evaluation_ends_each_episode_of_each_seed_at_its_own_end():
    """jax_online.evaluate runs every episode of every seed in one loop until the last ends:
    each total is its own episode's length (its termination or the time limit), and seed i's
    episode j starts from reset(fold_in(fold_in(key, i), j)) as documented."""
    key, seeds, episodes = jax.random.PRNGKey(0), 3, 4
    agent = _ConstantAgent(jnp.zeros(seeds))
    totals = np.asarray(
        jax_online.evaluate(agent, key, env=ONE_PER_STEP, bounds=None, episodes=episodes)
    )
    lengths = np.array([
        [int(_one_per_step_reset(jax.random.fold_in(jax.random.fold_in(key, i), j))[0].physics)
         for j in range(episodes)]
        for i in range(seeds)
    ])  # fmt: skip
    np.testing.assert_array_equal(totals, np.minimum(lengths, 25))
    assert len(np.unique(totals)) >= 4  # the episodes did end at different steps
