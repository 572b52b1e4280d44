"""Smoke tests of the benchmark harness at tiny sizes, and checks that the PyTorch reference
computes what the JAX code does (same schedule, same network sizes). PyTorch is optional:
without it the reference columns must come out null and the torch-only checks are skipped."""

import dataclasses
import importlib.util
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import flops, harness
from benchmarks.harness import Row
from benchmarks.run import Sizes, run
from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig
from edis_jax.config.presets import preset
from edis_jax.diffusion import edm

HAS_TORCH = importlib.util.find_spec("torch") is not None

TINY = Sizes(
    models=(("tiny", 2, 0),),
    samples=64,
    small_batch=16,
    sampler_steps=4,
    train_chunk=4,
    ref_train_steps=2,
    agent_preset="tiny",
    agent_batch=16,
    agent_updates=4,
    ref_updates=(("iql", 2), ("sac", 2), ("calql", 2)),
    cep_chunk=2,
    online_steps=((2, 2),),
    scaling_seeds=(2,),
    scaling_updates=3,
    scaling_preset="tiny",
    scaling_rows=8,
    repeats=1,
    peak_n=256,
)


# A subset of the rows keeps this test fast (each row compiles its own programs); every row
# runs in the slow test below.
SUBSET = "guided sampler, tiny size (32x2), 16 rows|IQL update"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    record, markdown = run(
        TINY, out, quick=True, torch=HAS_TORCH, memory=False, only=SUBSET, log=lambda _: None
    )
    return out, record, markdown


def test_tiny_run_writes_the_agreed_schema(tiny_run):
    out, record, markdown = tiny_run
    data = json.loads((out / f"{harness.device_name()}-quick-partial.json").read_text())
    assert data["device"] == harness.device_name()
    assert data["peak_matmul_gflops"] > 0
    names = [r["name"] for r in data["rows"]]
    assert names == [
        "guided sampler, tiny size (32x2), 16 rows, 4 steps",
        "IQL update chunk, 4 updates, batch 16",
    ]
    _check_rows(data["rows"], HAS_TORCH)
    # Both rows count FLOPs: the achieved rate and its fraction of the matmul peak follow.
    assert all(r["gflops"] > 0 and r["peak_fraction"] > 0 for r in data["rows"])
    assert (out / f"{harness.device_name()}-quick-partial.md").read_text() == markdown
    assert "| benchmark | JAX ms | PyTorch ms | speedup |" in markdown


def test_tiny_run_scales_over_seeds(tiny_run):
    _, record, _ = tiny_run
    scaling = record["scaling"]
    assert [(s["workload"].split(" (")[0], s["seeds"]) for s in scaling] == [
        ("IQL update chunk", 2)
    ]
    _check_scaling(scaling[0], "updates/s")


def test_online_step_row_alternates_jax_and_reference_rounds(tmp_path):
    """The online-step row times JAX and the reference in alternating rounds (this machine's
    speed drifts within minutes) and reports each side's median and the per-round speedups."""
    sizes = dataclasses.replace(TINY, online_rounds=3)
    record, _ = run(
        sizes, tmp_path, quick=True, torch=HAS_TORCH, memory=False, only="online step",
        log=lambda _: None,
    )  # fmt: skip
    (row,) = [dataclasses.asdict(r) for r in record["rows"]]
    _check_rows([row], HAS_TORCH)
    assert "median of 3 alternating rounds of 2 steps" in row["note"]
    assert ("speedup per round" in row["note"]) == HAS_TORCH
    split = re.search(r"env ([\d.]+), transfer (-?[\d.]+), update ([\d.]+) ms", row["note"])
    env, transfer, update = (float(x) for x in split.groups())
    assert env > 0 and update > 0  # transfer is the rest of the median step (3 decimals shown)
    # Three values each rounded to 3 decimals: their sum may miss jax_ms by up to 1.5e-3.
    assert transfer == pytest.approx(row["jax_ms"] - env - update, abs=2e-3)


@pytest.mark.slow
def test_every_row_runs_at_tiny_sizes(tmp_path):
    """All rows (JAX side only: the PyTorch side is exercised above and by its own checks)."""
    record, _ = run(
        TINY, tmp_path, quick=True, torch=False, memory=False, backends=False, log=lambda _: None
    )
    # 3 sampler rows + 1 train step per model, train chunk, 2 CEP rows, 3 agents, 1 online step.
    assert len(record["rows"]) == 4 + 1 + 2 + 3 + 1
    _check_rows([dataclasses.asdict(r) for r in record["rows"]], has_ref=False)
    _check_scaling(record["scaling"][0], "updates/s")
    _check_scaling(record["scaling"][1], "samples/s")


def _check_scaling(entry: dict, unit: str) -> None:
    assert entry["unit"] == unit and entry["vmapped_ms"] > 0, entry
    assert entry["per_seed_rate"] == pytest.approx(entry["rate"] / entry["seeds"])
    assert entry["vs_sequential"] == pytest.approx(entry["sequential_ms"] / entry["vmapped_ms"])


def _check_rows(rows: list[dict], has_ref: bool) -> None:
    for row in rows:
        assert {"name", "jax_ms", "ref_ms", "speedup", "gflops", "peak_fraction"} <= set(row)
        assert row["jax_ms"] is not None and row["jax_ms"] > 0, row
        if has_ref:
            assert row["ref_ms"] > 0, row
            assert row["speedup"] == pytest.approx(row["ref_ms"] / row["jax_ms"])
        else:
            assert row["ref_ms"] is None and row["speedup"] is None


def test_flop_counts_by_hand():
    cfg = preset("paper").diffusion  # 1024 wide, 6 blocks, dim_t 256, 8 Fourier frequencies
    per_row = 2 * (17 * 256 + 256 * 256 + 26 * 256 + 256 * 1024 + 6 * 1024 * 1024 + 1024 * 26)
    assert flops.denoiser_flops(1, 26, cfg) == per_row
    energy = 2 * (27 * 256 + 256 * 256 + 256 * 256 + 256)
    assert flops.energy_flops(1, 26, EnergyConfig()) == energy
    steps = dataclasses.replace(cfg, num_steps=10)
    assert flops.sampler_flops(3, 26, steps, EnergyConfig(), guided=False) == 19 * 3 * per_row
    guided = flops.sampler_flops(3, 26, steps, EnergyConfig(), guided=True)
    assert guided == 19 * 3 * (per_row + 3 * 2 * energy)  # 3 energies, forward + input grad
    # The published sampler's 312.7 s for 10k rows at 128 steps is the brief's 122 GFLOP/s.
    published = flops.sampler_flops(10_000, 26, cfg, EnergyConfig(), guided=True) / 312.7e9
    assert published == pytest.approx(122, rel=0.01)
    assert flops.diffusion_train_step_flops(256, 26, cfg) == 3 * 256 * per_row
    iql = preset("paper").iql  # 256 x 256: Q (14 in), V (11 in), actor (11 in, 3 out)
    q, v, actor = (2 * (i * 256 + 256 * 256 + 256 * o) for i, o in ((14, 1), (11, 1), (11, 3)))
    assert flops.agent_update_flops("iql", iql, 11, 3, 256) == 256 * (8 * q + 4 * v + 3 * actor)


def test_row_derives_ratios_and_leaves_missing_fields_null():
    row = Row.make("x", jax_ms=2.0, ref_ms=10.0, flops=4e6, peak_gflops=4.0)  # 4 MFLOP in 2 ms
    assert row.speedup == 5.0 and row.gflops == 2.0 and row.peak_fraction == 0.5
    empty = Row.make("y", jax_ms=2.0)
    assert empty.ref_ms is None and empty.speedup is None and empty.gflops is None


def test_time_ms_warms_up_then_takes_the_best():
    calls = []
    ms = harness.time_ms(lambda: calls.append(1) or jnp.ones(3), warmup=2, repeats=3)
    assert len(calls) == 5 and ms >= 0


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (the bench extra)")
def test_torch_sampler_schedule_matches_jax():
    from benchmarks.torch_diffusion import ElucidatedDiffusion

    cfg = DiffusionConfig(num_steps=32)
    schedule = ElucidatedDiffusion(26, cfg).schedule()
    sigmas = np.array([s for s, _, _ in schedule] + [schedule[-1][1]])
    gammas = np.array([g for _, _, g in schedule])
    jax_sigmas = edm.noise_levels(cfg)
    np.testing.assert_allclose(sigmas, jax_sigmas, rtol=1e-5)
    np.testing.assert_allclose(gammas, edm.churn(cfg), rtol=1e-6)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (the bench extra)")
@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_torch_networks_have_the_jax_sizes(name):
    from benchmarks import torch_agents, torch_diffusion
    from benchmarks.jax_side import make_agent
    from edis_jax import generator

    cfg = preset(name)
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    torch_count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    gen = generator.create(jax.random.key(0), 11, 3, cfg.diffusion, cfg.energy)
    denoiser = torch_diffusion.ElucidatedDiffusion(26, cfg.diffusion)
    assert torch_count(denoiser) == count(gen.diffusion.params)
    energies = torch_diffusion.make_energies(11, 3, cfg.energy)[0]
    assert sum(map(torch_count, energies)) == count(gen.energies.params)
    iql = torch_agents.IQL(11, 3, cfg.iql)
    jax_iql = make_agent("iql", 11, 3, config=cfg.iql)
    for torch_net, jax_params in (
        (iql.qf, jax_iql.critic.params),
        (iql.vf, jax_iql.value.params),
        (iql.actor, jax_iql.actor.params),
    ):
        assert torch_count(torch_net) == count(jax_params)


def test_gpu_run_at_tiny_size_writes_every_part(tmp_path):
    """`python -m benchmarks.gpu --size tiny`: the GPU run's code on this CPU, every part run
    within the budget (minutes here, mostly compiling), one JSON and one markdown file. Not
    @slow: the paper-tasks issue asks CI to run the GPU run's code on a CPU. The rows part runs
    a subset (`--only`): each row compiles its own programs, and every row runs in the @slow
    test_every_row_runs_at_tiny_sizes."""
    from benchmarks import gpu

    only = "guided sampler, tiny size (32x2), 16 rows|IQL update|online step"
    # The backends part (MJX's compiles: minutes here) and the calql part (five arms) run in
    # the @slow tests below; the backends' code runs here on Pendulum
    # (test_env_backends_measures_both_backends), the comparison's in test_config.py.
    parts = tuple(p for p in gpu.PARTS if p not in ("backends", "calql"))
    # The budget is wall time: about 10 min was enough on a quiet machine, and at load 5 (the
    # suite beside an experiment) the smoke part alone outran 600 s. A cap costs nothing unused.
    record, markdown = gpu.run(
        "tiny", 3600.0, tmp_path, parts, torch=False, only=only, log=lambda _: None
    )
    data = json.loads(next(tmp_path.glob("gpu_*-tiny.json")).read_text())
    assert [(p["part"], p["status"]) for p in data["parts"]] == [(p, "ran") for p in parts]
    assert data["device_kind"] == jax.devices()[0].device_kind and data["size"] == "tiny"
    names = [r["name"].split(",")[0] for r in data["rows"]]
    assert names == ["guided sampler", "IQL update chunk", "online step"], names
    assert all(r["jax_ms"] > 0 for r in data["rows"])
    assert {(s["unit"], s["seeds"]) for s in data["scaling"]} == {
        (unit, n) for unit in ("updates/s", "samples/s") for n in (1, 8, 32)
    }
    memory = data["memory"]
    assert memory["state_mb"] > 0 and memory["what"].startswith("32-seed tiny-size")
    assert memory["device_peak_mb"] == "not available"  # CPU
    smoke = data["smoke"]
    assert smoke["retrains"] == 1 and smoke["metrics_records"] > 0 and smoke["checkpoints"] > 0
    assert "| smoke |" in markdown and "### Smoke run" in markdown


@pytest.mark.slow
def test_gpu_run_backends_part_at_tiny_size(tmp_path):
    from benchmarks import gpu

    record, markdown = gpu.run(
        "tiny", 600.0, tmp_path, ("smoke", "backends"), torch=False, log=lambda _: None
    )
    data = json.loads(next(tmp_path.glob("gpu_*-tiny.json")).read_text())
    assert [p["status"] for p in data["parts"]] == ["ran", "ran"], data["parts"]
    backends = data["backends"]
    assert {(r["backend"], r["seeds"]) for r in backends["online"]} == {
        (b, n) for b in ("gymnasium", "jax") for n in (1, 2)
    }
    projected = backends["projection"]
    assert projected and all(r["complete"] and r["total_s"] > 0 for r in projected), projected
    assert "### Env backends" in markdown and "Projected wall time" in markdown


@pytest.mark.slow
def test_gpu_run_calql_part_at_tiny_size(tmp_path):
    """The Cal-QL comparison's GPU part at the tiny preset: every arm finished, in order, and
    the report of all five with the contrasts and the online improvements."""
    from benchmarks import comparison, gpu

    record, markdown = gpu.run("tiny", 900.0, tmp_path, ("calql",), torch=False, log=print)
    data = json.loads(next(tmp_path.glob("gpu_*-tiny.json")).read_text())
    assert [p["status"] for p in data["parts"]] == ["ran"], data["parts"]
    calql = data["calql"]
    assert [a["arm"] for a in calql["arms"]] == list(comparison.ARMS["calql"])
    assert all(a["env_backend"] == "gymnasium" and a["wall_s"] > 0 for a in calql["arms"])
    assert "Online improvement" in calql["report"] and "energy guidance" in calql["report"]
    assert "### The Cal-QL comparison" in markdown


def test_env_backends_measures_both_backends(datasets_env, tmp_path):
    """benchmarks/env_backends.py on the Pendulum test data (its JAX env compiles in seconds;
    the Hopper sizes run in the @slow test above): every row of both backends, the projection
    from them, and the files."""
    from conftest import PENDULUM

    from benchmarks import env_backends

    sizes = env_backends.Sizes().quick()
    sizes = env_backends.dataclasses.replace(
        sizes, dataset=PENDULUM, eval_envs=("Pendulum-v1",), steps=((1, 3),)
    )
    record = env_backends.run(sizes, tmp_path, quick=True, log=lambda _: None)
    online = record["online"]
    assert {(r["backend"], r["seeds"]) for r in online} == {
        (b, n) for b in ("gymnasium", "jax") for n in (1, 2)
    }
    assert all(r["env_steps_per_s"] > 0 and r["steps"] == 3 for r in online)
    evals = record["evaluation"]
    assert {r["backend"] for r in evals} == {"gymnasium", "jax"}
    assert all(r["episodes"] == 2 and r["episodes_per_s"] > 0 for r in evals)
    projected = record["projection"]
    assert [(r["backend"], r["seeds"]) for r in projected] == [("gymnasium", 2), ("jax", 2)]
    assert all(not r["complete"] and r["retrains_s"] is None for r in projected)
    text = env_backends.Path(record["md_path"]).read_text()
    assert "| 1 | 2 |" in text and "Pendulum-v1" in text and "not measured" in text


def test_gpu_run_skips_the_parts_its_budget_cannot_fit(tmp_path):
    """With a budget that fits no part, every part is skipped with its line and the files still
    name the device and list every part."""
    from benchmarks import gpu

    budget = gpu.RESERVE_S + 2.0  # the probe runs whatever the budget; nothing else fits
    record, markdown = gpu.run("tiny", budget, tmp_path, torch=False, log=lambda _: None)
    data = json.loads(next(tmp_path.glob("gpu_*-tiny.json")).read_text())
    assert [p["part"] for p in data["parts"]] == list(gpu.PARTS)
    assert all(p["status"].startswith("skipped: ") for p in data["parts"]), data["parts"]
    assert data["rows"] == [] and data["smoke"] is None and data["memory"] is None
    assert data["budget_s"] == budget and "skipped" in markdown


@pytest.mark.slow
def test_retrain_cost_times_every_phase_of_both_configs(tmp_path, datasets_env):
    """`python -m benchmarks.retrain_cost` at the tiny sizes: both configs, every phase timed,
    the files written. The two configs differ in the generator-fidelity issue's switches."""
    from benchmarks import retrain_cost

    before, now = retrain_cost.configs(1, "tiny").values()
    assert (before.diffusion.warm_start, before.energy.bank_refreshes) == (False, 1)
    assert before.agent == now.agent and before.online == now.online
    retrain_cost.main(["--preset", "tiny", "--seeds", "1", "--online-rows", "300", "--out",
                       str(tmp_path)])  # fmt: skip
    record = json.loads(next(tmp_path.glob("retrain_cost_*.json")).read_text())
    assert [r["name"] for r in record["results"]] == list(retrain_cost.configs(1, "tiny"))
    for result in record["results"]:
        assert set(result["phases_s"]) == set(retrain_cost.PHASES)
        assert all(seconds > 0 for seconds in result["phases_s"].values()), result
    assert "| tiny preset now | 1 |" in next(tmp_path.glob("retrain_cost_*.md")).read_text()
