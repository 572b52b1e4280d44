"""Seed-axis sharding (edis_jax.train.sharding): a sharded vmapped run equals the unsharded one.

Several CPU devices need XLA_FLAGS set before jax is imported, so the multi-device checks run
in a fresh subprocess with --xla_force_host_platform_device_count=4.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax.train import sharding

ROOT = Path(__file__).resolve().parents[1]

# 4 SAC agents (one per seed) run a 20-update chunk, vmapped over seeds, once on one device
# and once with the seed axis sharded over 4 CPU devices; the script prints a JSON summary.
SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from edis_jax.train import sharding
    from edis_jax.agents import SAC, update_chunk
    from edis_jax.config.agent_configs import SACConfig
    from edis_jax.data import buffer
    from edis_jax.data.transition import Transition

    SEEDS, OBS, ACT = 4, 3, 2
    config = SACConfig(hidden_dims=(32, 32))

    def make_seed(key):
        agent_key, data_key = jax.random.split(key)
        k = jax.random.split(data_key, 4)
        data = Transition.from_arrays(
            jax.random.normal(k[0], (256, OBS)), jax.random.uniform(k[1], (256, ACT), minval=-1),
            jax.random.normal(k[2], (256,)), jax.random.normal(k[3], (256, OBS)),
            jnp.zeros(256),
        )
        mixture = buffer.Mixture.of(buffer.from_transitions(data))
        return SAC.create(agent_key, OBS, ACT, config), mixture

    agents, mixtures = jax.vmap(make_seed)(jax.random.split(jax.random.key(0), SEEDS))
    keys = jax.random.split(jax.random.key(1), SEEDS)
    chunk = jax.jit(jax.vmap(lambda a, m, k: update_chunk(a, m, k, 20, 32)))

    plain = chunk(agents, mixtures, keys)
    sharded_inputs = sharding.shard_seeds((agents, mixtures, keys))
    sharded = chunk(*sharded_inputs)

    def numpy_leaves(tree):
        is_key = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        return [np.asarray(jax.random.key_data(x) if is_key(x) else x) for x in jax.tree.leaves(tree)]

    plain_leaves, sharded_leaves = numpy_leaves(plain), numpy_leaves(sharded)
    out_devices = {len(x.sharding.device_set) for x in jax.tree.leaves(sharded[0])}
    errors = []
    for bad in (jax.tree.map(lambda x: x[:3], agents), {"a": jnp.zeros(4), "b": jnp.zeros(())}):
        try:
            sharding.shard_seeds(bad)
        except ValueError as e:
            errors.append(str(e))
    print(json.dumps({
        "devices": len(jax.devices()),
        "out_devices": sorted(out_devices),
        "bitwise_equal": all(np.array_equal(a, b) for a, b in zip(plain_leaves, sharded_leaves)),
        "allclose": all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(plain_leaves, sharded_leaves)),
        "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(plain_leaves, sharded_leaves)),
        "seeds_differ": bool(np.abs(plain_leaves[0][0] - plain_leaves[0][1]).max() > 0),
        "errors": errors,
    }))
    """
)


@pytest.fixture(scope="module")
def sharded_run():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sharded_run_equals_unsharded(sharded_run):
    assert sharded_run["devices"] == 4
    assert sharded_run["out_devices"] == [4], "the outputs should stay split over 4 devices"
    assert sharded_run["seeds_differ"]
    # To float tolerance, not bitwise: each device runs a batch of 1 seed instead of 4, and
    # XLA's CPU matmuls block (and so round) differently for those shapes. Measured: max |diff|
    # 9.5e-7 over every leaf after 20 updates (last-bit noise, carried through Adam); a
    # cross-seed mix-up or a wrong key would differ at O(1e-2) or more.
    assert sharded_run["allclose"], f"max |diff| = {sharded_run['max_abs_diff']}"


def test_uneven_seeds_and_missing_seed_axis_are_clear_errors(sharded_run):
    uneven, scalar = sharded_run["errors"]
    assert "3 seeds cannot be split evenly over 4 devices" in uneven
    assert "multiple of 4 seeds" in uneven
    assert "no seed axis" in scalar


def test_one_device_commits_the_tree_to_it():
    # Committed like a restored checkpoint's arrays (test_train's resume compiles nothing new).
    tree = {"w": jnp.arange(6.0).reshape(3, 2), "k": jax.random.split(jax.random.key(0), 3)}
    device = jax.devices()[0]
    out = sharding.shard_seeds(tree, devices=[device])
    for before, after in zip(jax.tree.leaves(tree), jax.tree.leaves(out), strict=True):
        assert not before.committed and after.committed
        assert after.sharding == jax.sharding.SingleDeviceSharding(device)
    np.testing.assert_array_equal(out["w"], tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(out["k"]), jax.random.key_data(tree["k"]))


def test_seed_count_reads_the_leading_axis():
    assert sharding.seed_count({"a": jnp.zeros((5, 2)), "b": [jnp.zeros(5)]}) == 5
    with pytest.raises(ValueError, match="disagree on the leading seed axis"):
        sharding.seed_count({"a": jnp.zeros((5, 2)), "b": jnp.zeros(4)})
