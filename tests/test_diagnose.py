"""The data-alignment diagnostic: each metric against a known answer, then the whole command."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest

from edis_jax import diagnose
from edis_jax.cli import commands
from edis_jax.config import presets


def test_table_prints_na_for_unavailable_metrics():
    rows = [
        {
            "guidance": "none",
            "state_mmd": 0.5,
            "action_logprob": -1.0,
            "dynamics_error": None,
            "n": 8,
        }
    ]
    table = diagnose.format_table({"rows": rows, "env_id": "X-v0"})
    assert "n/a" in table.splitlines()[-1] and "0.5" in table


# ------------------------------------------------------------------------- whole command


def _pendulum_episodes(bias: float, seed: int, episodes: int = 3, length: int = 100):
    """Episodes under torques N(bias, 0.3^2) (kept inside the agents' [-1, 1])."""
    env = gym.make("Pendulum-v1", max_episode_steps=length)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed * 100 + i)
        ep = {
            "observations": [obs],
            "actions": [],
            "rewards": [],
            "terminations": [],
            "truncations": [],
        }
        done = False
        while not done:
            action = np.clip(bias + 0.3 * rng.normal(size=1), -1, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for k, v in zip(ep, (obs, action, reward, terminated, truncated), strict=True):
                ep[k].append(v)
        out.append({k: np.asarray(v) for k, v in ep.items()})
    return out


@pytest.mark.slow  # ~60 s of XLA compiles on 2 shared cores (retrain and two guided samplers)
def test_diagnose_command_writes_the_json_schema(minari_path, tmp_path):
    import json

    from edis_jax.data.minari_store import write_dataset

    write_dataset("test/pendulum/offline-v0", "Pendulum-v1", _pendulum_episodes(0.0, 0))
    write_dataset("test/pendulum/target-v0", "Pendulum-v1", _pendulum_episodes(0.8, 1))
    out = tmp_path / "diag.json"
    args = commands.DiagnoseArgs(
        dataset="test/pendulum/offline-v0",
        target="test/pendulum/target-v0",
        preset="tiny",
        policy_steps=300,
        n=128,
        guidance=("none", "all"),
        diffusion_steps=50,
        inpainting="noised",
        mmd_rows=128,
        json=str(out),
        progress=False,
    )
    commands.diagnose_main(args)
    result = json.loads(out.read_text())
    assert [r["guidance"] for r in result["rows"]] == ["none", "all"]
    for row in result["rows"]:
        assert set(row) == {"guidance", "state_mmd", "action_logprob", "dynamics_error", "n"}
        assert row["n"] == 128
        assert all(math.isfinite(row[m]) for m in diagnose.METRICS)
    assert result["retrain"]["diffusion_loss"] > 0 and "cep_state_acc" in result["retrain"]
    # The settings as used: the preset's, with the overrides given.
    assert (
        result["diffusion"]["train_steps"] == 50 and result["diffusion"]["inpainting"] == "noised"
    )
    energy = json.loads(json.dumps(dataclasses.asdict(presets.preset("tiny").energy)))
    assert result["energy"] == energy
    offline, target = result["reference"]
    # Real data follows the true dynamics exactly; target states match themselves better than
    # the offline states (the target's torques are biased by 0.8) do.
    assert offline["dynamics_error"] < 1e-5 and target["dynamics_error"] < 1e-5
    assert target["state_mmd"] < offline["state_mmd"]
    # The quick policy was fit to the target actions (mean 0.8), so they are likelier than the
    # offline ones (mean 0); an untrained policy (mean ~0) would rank them the other way.
    assert target["action_logprob"] > offline["action_logprob"]
    aligned = result["transition_alignment"]
    assert len(aligned["sigma"]) == len(aligned["cos"]) == len(aligned["rank_acc"]) > 1
    assert all(-1 <= c <= 1 for c in aligned["cos"]) and 0 <= aligned["best_cut"] <= 1
    assert -1 <= aligned["model_rows_cos"] <= 1  # on the unguided rows (the env has a simulator)


def test_table_prints_the_transition_energys_alignment():
    aligned = {"sigma": [20.0, 0.002], "cos": [0.01, 0.14], "rank_acc": [0.09, 0.2],
               "chance": 1 / 11, "best_cut": 0.0098, "model_rows_cos": -0.05}  # fmt: skip
    rows = [{"guidance": "none", "state_mmd": 0.5, "action_logprob": -1.0,
             "dynamics_error": 0.4, "n": 8}]  # fmt: skip
    table = diagnose.format_table({"rows": rows, "transition_alignment": aligned})
    line = next(t for t in table.splitlines() if t.startswith("E_t's gradient"))
    assert "(chance 0.091)" in line and "20: +0.010 / 0.090" in line
    assert "0.002: +0.140 / 0.200" in line and "at best 1.0% closer" in line
    assert "own rows (s'_true from the simulator), cos at the last level: -0.050" in table


def test_diagnose_args_reject_unknown_guidance():
    from edis_jax.config.validation import ConfigError

    with pytest.raises(ConfigError, match="--guidance"):
        commands.DiagnoseArgs(dataset="a", target="b", guidance=("none", "energy"))
