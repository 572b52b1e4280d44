"""The fused online step (train/env_step.py, train/state.online_step): one compiled call per env
step that stores the transition, updates and draws the next action exactly as choose_action
would, and a run driver that makes that one call per env step."""

import jax
import numpy as np
import pytest

from edis_jax import config
from edis_jax.config import presets
from edis_jax.data.transition import Transition
from edis_jax.datagen import builder
from edis_jax.train import env_step, loop
from edis_jax.train import state as S

OBS_DIM, ACT_DIM, SEEDS = 11, 3, 2  # Hopper
# Both tests use these shapes (300 offline rows, 40 online steps): one compile of each program.
OFFLINE_ROWS, ONLINE_STEPS = 300, 40


def tiny_run_config(**changes) -> config.RunConfig:
    return presets.preset("tiny").replace(
        algo="sac", seeds=SEEDS, edis=False, offline_steps=0, online_steps=ONLINE_STEPS, **changes
    )


def test_online_step_stores_updates_and_draws_what_choose_action_draws():
    cfg = tiny_run_config()
    rng = np.random.default_rng(0)
    n = OFFLINE_ROWS
    offline = Transition.from_arrays(
        rng.normal(size=(n, OBS_DIM)), rng.uniform(-1, 1, (n, ACT_DIM)), rng.normal(size=n),
        rng.normal(size=(n, OBS_DIM)), np.zeros(n),
    )  # fmt: skip
    state = S.init_state(cfg, jax.device_get(offline), 1.0)
    keys = S.seed_keys(cfg)
    random_steps = 3  # uniform actions for steps 0-2, policy samples after: both branches
    traces = []
    original = env_step.learn_and_act

    def counted(*args, **kwargs):
        traces.append(1)  # runs only while tracing
        return original(*args, **kwargs)

    obs = np.asarray(rng.normal(size=(SEEDS, OBS_DIM)), np.float32)
    action = S.choose_action(state.agent, obs, keys, np.int32(0), True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(env_step, "learn_and_act", counted)
        for t in range(6):
            next_obs, final_obs = rng.normal(size=(2, SEEDS, OBS_DIM))
            reward, terminated = rng.normal(size=SEEDS), np.array([t == 2, False])
            row = env_step.env_row(next_obs, final_obs, reward, terminated)
            stored_obs, stored_action = np.asarray(obs), np.asarray(action)
            state, obs, action, metrics = S.online_step(
                state, obs, action, row, keys, np.int32(t), t + 1 < random_steps,
                utd=cfg.online.utd, batch_size=cfg.batch_size,
            )  # fmt: skip
            if t == 0:
                traced = len(traces)
            # The next action is bitwise the one choose_action draws for step t + 1 (what the
            # driver calls at the start, on resume and after an agent change).
            expected = S.choose_action(
                state.agent, obs, keys, np.int32(t + 1), t + 1 < random_steps
            )
            np.testing.assert_array_equal(np.asarray(action), np.asarray(expected))
            np.testing.assert_array_equal(np.asarray(obs), next_obs.astype(np.float32))
            row_t = jax.tree.map(lambda x, t=t: np.asarray(x[:, t]), state.online.data)
            np.testing.assert_array_equal(row_t.obs, stored_obs)
            np.testing.assert_array_equal(row_t.action, stored_action)
            np.testing.assert_array_equal(row_t.next_obs, final_obs.astype(np.float32))
            np.testing.assert_array_equal(row_t.reward, reward.astype(np.float32))
            np.testing.assert_array_equal(row_t.terminal, terminated.astype(np.float32))
            assert all(np.shape(v) == (SEEDS,) for v in metrics.values())
    assert np.all(np.abs(np.asarray(action)) <= 1.0)
    assert len(traces) == traced  # no step after the first traced again (t, random are leaves)
    assert int(state.online.size[0]) == 6


def test_run_driver_makes_one_device_call_per_env_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    builder.make_dataset(
        "Hopper-v5", "random", OFFLINE_ROWS, "test/hopper/step-v0", seed=0, progress=False
    )
    calls = {"online_step": 0, "choose_action": 0}

    def counting(name):
        original = getattr(S, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(S, name, counting(name))
    cfg = tiny_run_config(
        dataset="test/hopper/step-v0", out=str(tmp_path / "run"), eval_every=ONLINE_STEPS,
        log_every=ONLINE_STEPS, checkpoint_every=ONLINE_STEPS, eval_episodes=1,
    )  # fmt: skip
    loop.train(cfg, progress=False)
    # One fused call per env step; choose_action only for the first step.
    assert calls == {"online_step": ONLINE_STEPS, "choose_action": 1}
