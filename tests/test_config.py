"""Config validation and presets."""

import dataclasses
import json
from pathlib import Path

import chex
import jax
import pytest

from edis_jax import config, make_run
from edis_jax.config import agent_configs, presets, validation
from edis_jax.train import directory
from edis_jax.train import state as S


@pytest.mark.parametrize("name", config.PRESET_NAMES)
def test_presets_are_valid_and_named(name):
    cfg = presets.preset(name)
    assert cfg.preset == name
    assert cfg.agent is cfg.iql


def test_paper_preset_has_published_defaults():
    cfg = presets.preset("paper")
    d, e, o = cfg.diffusion, cfg.energy, cfg.online
    assert (d.width, d.depth, d.dim_t, d.num_steps) == (1024, 6, 256, 128)
    assert (d.sigma_min, d.sigma_max, d.rho, d.s_churn, d.s_noise) == (
        0.002,
        80.0,
        7.0,
        80.0,
        1.003,
    )
    assert (e.scale_state, e.scale_policy, e.scale_transition) == (2.0, 0.1, 0.1)
    assert (o.retrain_every, o.num_samples, o.synthetic_ratio) == (10_000, 100_000, 0.5)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"offline_steps": -1}, "--offline-steps must be >= 0"),
        ({"seeds": 0}, "--seeds must be > 0"),
        ({"algo": "td3"}, "unknown algo 'td3'"),
        ({"guide": ("state", "reward")}, "unknown guide"),
        ({"guide": ("state", "state")}, "lists a term twice"),
        ({"ref_min_score": 0.0}, "give both"),
        ({"ref_min_score": 5.0, "ref_max_score": 1.0}, "must be above"),
    ],
)
def test_run_config_rejects_bad_values(changes, match):
    with pytest.raises(validation.ConfigError, match=match):
        config.RunConfig(**changes)


@pytest.mark.parametrize(
    ("cls", "changes", "match"),
    [
        (
            config.OnlineConfig,
            {"synthetic_ratio": 1.5},
            r"--online.synthetic-ratio must be in \[0, 1\]",
        ),
        (agent_configs.IQLConfig, {"expectile": -0.1}, "--iql.expectile"),
        (config.DiffusionConfig, {"sigma_min": 100.0}, "--diffusion.sigma-min"),
        (
            config.DiffusionConfig,
            {"inpainting": "repaint"},
            "--diffusion.inpainting must be clean or noised",
        ),
        (agent_configs.CalQLConfig, {"cql_alpha": -1.0}, "--calql.cql-alpha must be >= 0"),
        (config.EnergyConfig, {"num_negatives": 0}, "--energy.num-negatives must be > 0"),
    ],
)
def test_part_configs_reject_bad_values(cls, changes, match):
    with pytest.raises(validation.ConfigError, match=match):
        cls(**changes)


def test_unknown_preset_is_rejected():
    with pytest.raises(validation.ConfigError, match="unknown preset 'huge'"):
        presets.preset("huge")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.preset("tiny").seeds = 3


def test_make_run_arms_share_the_baselines_offline_phase():
    iql, *arms = make_run.arm_configs()
    assert iql.init_from is None and not iql.edis and iql.seeds >= 4
    assert [(a.edis, a.guide) for a in arms] == [(True, config.GUIDES), (True, ())]
    for arm in arms:
        assert arm.init_from == iql.out
        for name in directory.OFFLINE_FIELDS:
            assert getattr(arm, name) == getattr(iql, name), name
        assert arm.iql == iql.iql
    # SynthER takes EDIS's pretraining: the same generator settings, only the guidance differs.
    edis, synther = arms
    assert (edis.generator_from, synther.generator_from) == (None, edis.out)
    assert synther.diffusion == edis.diffusion and synther.diffusion.initial_steps > 0
    for name in directory.PRETRAINING_FIELDS:
        assert config.to_dict(synther).get(name) == config.to_dict(edis).get(name), name


def test_comparison_generator_arms_share_iql_edis_pretraining(tmp_path):
    from benchmarks import comparison

    configs = comparison.arm_configs(tmp_path, list(comparison.ARMS["iql"]))
    by_name = {Path(c.out).name: c for c in configs}
    assert by_name["iql_edis"].generator_from is None
    for name, cfg in by_name.items():
        shared = cfg.edis and name != "iql_edis"
        assert cfg.generator_from == (str(tmp_path / "iql_edis") if shared else None), name
        if shared:
            assert cfg.diffusion == by_name["iql_edis"].diffusion, name
    # Without IQL-EDIS among the arms, every generator arm pretrains its own.
    alone = comparison.arm_configs(tmp_path, ["iql", "iql_synther"])
    assert [c.generator_from for c in alone] == [None, None]


def test_comparison_blocks_of_seeds_differ_only_in_their_base_seed(tmp_path):
    """`--seed`: another base seed, in another --out, is a block of further independent seeds
    of the same arms; a folder keeps the base seed it started with."""
    from benchmarks import comparison

    block = comparison.arm_configs(tmp_path / "b1", ["iql", "iql_edis"], seed=1)
    first = comparison.arm_configs(tmp_path / "b0", ["iql", "iql_edis"])
    assert [c.seed for c in block] == [1, 1] and [c.seed for c in first] == [0, 0]
    for a, b in zip(block, first, strict=True):
        differ = {k for k, v in config.to_dict(a).items() if config.to_dict(b)[k] != v}
        assert differ <= {"seed", "out", "init_from", "generator_from"}, differ
    (tmp_path / "b1" / "iql").mkdir(parents=True)
    (tmp_path / "b1" / "iql" / "config.json").write_text(json.dumps(config.to_dict(block[0])))
    with pytest.raises(directory.RunDirError, match="base seed 1, not 0: pass --seed 1") as refused:
        comparison.arm_configs(tmp_path / "b1", ["iql"])
    assert "\n" not in str(refused.value)


def test_calql_comparison_at_the_paper_preset_takes_the_published_guidance(tmp_path):
    """The GPU size: the paper preset's networks and generator, which has no pretraining to
    share, its published guidance scales, and the clean schedule where an arm does not name
    the published one (the paper preset's own default is the published one)."""
    from benchmarks import comparison

    names = list(comparison.ARMS["calql"])
    configs = comparison.arm_configs(tmp_path, names, "calql", preset="paper")
    by_name = {Path(c.out).name: c for c in configs}
    paper = presets.preset("paper")
    for name, cfg in by_name.items():
        assert cfg.preset == "paper" and cfg.diffusion.width == paper.diffusion.width, name
        assert cfg.generator_from is None, name  # each EDIS arm trains its own generator
        assert (cfg.energy.scale_state, cfg.energy.scale_policy) == (2.0, 0.01), name
        assert cfg.online.schedule == ("published" if "published" in name else "clean"), name
    assert comparison.size_of(by_name["calql"]) == comparison.SIZES["calql", "paper"]
    assert by_name["calql_edis"].diffusion.train_steps == 2000
    assert S.num_retrains(by_name["calql_edis"]) == 3


def test_iql_comparison_derives_the_archived_experiments_configs():
    """The IQL comparison's archived arms (benchmarks/results/comparison) are what arm_configs
    derives from their saved baseline: a refactor of the comparison cannot split it."""
    from benchmarks import comparison

    archive = Path(__file__).parents[1] / "benchmarks" / "results" / "comparison"
    configs = comparison.arm_configs(archive, list(comparison.ARMS["iql"]))
    assert len(configs) == 8
    for cfg in configs:
        saved = config.from_dict(
            directory.with_older_defaults(json.loads((Path(cfg.out) / "config.json").read_text()))
        )
        # Paths aside (and generator_from: the earlier arms pretrained their own, bitwise the
        # same generator), every field is the one the arm ran with.
        paths = {"out": "", "init_from": None, "generator_from": None}
        assert cfg.replace(**paths) == saved.replace(**paths), cfg.out
        assert (cfg.init_from is None) == (saved.init_from is None), cfg.out


def test_calql_comparison_arms_differ_only_in_what_they_name(tmp_path):
    """Every Cal-QL arm carries the published hopper-medium Cal-QL values, the baseline too;
    the clean-schedule arms start at the baseline's first retrain, the published one (which
    retrains after step 1) at the offline phase's end; the clean generator arms take the clean
    EDIS arm's pretraining (the published one pretrains over another lr horizon)."""
    from benchmarks import comparison

    configs = comparison.arm_configs(tmp_path, list(comparison.ARMS["calql"]), "calql")
    by_name = {Path(c.out).name: c for c in configs}
    assert list(by_name) == list(comparison.ARMS["calql"])
    base = by_name["calql"]
    published = presets.preset("cpu", "cal_ql_edis/hopper-medium")
    assert (base.calql.cql_alpha, base.calql.cql_alpha_online) == (10.0, 0.1)
    assert base.calql == published.calql and base.online.baseline_online_ratio == 0.5
    assert comparison.size_of(base) == comparison.SIZES["calql", "cpu"]
    for name, cfg in by_name.items():
        assert cfg.calql == base.calql and cfg.diffusion == base.diffusion, name
        assert cfg.energy == base.energy and cfg.seeds == base.seeds, name
        clean = cfg.online.schedule == "clean"
        expected_start = "first-retrain" if cfg.edis and clean else "offline"
        assert cfg.init_at == expected_start, name
        assert cfg.init_from == (None if name == "calql" else str(tmp_path / "calql")), name
        owner = name in ("calql", "calql_edis_published", "calql_edis")
        assert cfg.generator_from == (None if owner else str(tmp_path / "calql_edis"))
    # Each arm differs from the clean EDIS arm in the one field its name says.
    edis = by_name["calql_edis"].replace(generator_from=str(tmp_path / "calql_edis"))
    assert by_name["calql_synther"] == edis.replace(guide=(), out=str(tmp_path / "calql_synther"))
    control = by_name["calql_edis_no_synthetic"]
    assert control.online == dataclasses.replace(edis.online, synthetic_ratio=0.0)
    assert by_name["calql_edis_published"].online == dataclasses.replace(
        edis.online, schedule="published"
    )
    assert S.num_retrains(edis) >= 3  # the minimum


@pytest.mark.parametrize("algo", ["iql", "calql"])
def test_comparison_arms_share_a_pretraining_only_where_it_is_the_same(tmp_path, algo):
    """An arm that takes another's pretraining (--generator-from) starts it from the same
    generator state, lr horizon included: train/synthetic.py refuses a source whose inputs
    differ, so a wrong owner would stop the experiment at that arm's start. Cal-QL's published
    arm retrains once more than the clean ones, so with the `cpu` preset's one cosine over the
    run (warm_lr "continue") its pretraining differs from theirs."""
    from benchmarks import comparison

    configs = comparison.arm_configs(tmp_path, list(comparison.ARMS[algo]), algo)

    def start(cfg):  # the generator state its pretraining starts from (what the digest reads)
        return S.create_generator(cfg, jax.random.key(0), 11, 3).diffusion

    by_out = {c.out: c for c in configs}
    starts = {c.out: start(c) for c in configs if comparison.pretraining_of(c) is not None}
    takers = [c for c in configs if c.generator_from is not None]
    assert takers  # every generator arm but its owner takes a pretraining
    for cfg in takers:
        assert cfg.generator_from in starts and by_out[cfg.generator_from].generator_from is None
        chex.assert_trees_all_equal(starts[cfg.out], starts[cfg.generator_from])
    if algo == "calql":
        with pytest.raises(AssertionError):
            chex.assert_trees_all_equal(
                starts[str(tmp_path / "calql_edis_published")], starts[str(tmp_path / "calql_edis")]
            )


def test_comparison_keeps_the_settings_its_baseline_saved(tmp_path, monkeypatch):
    from benchmarks import comparison
    from edis_jax.train.directory import RunDirError

    first = comparison.arm_configs(tmp_path, list(comparison.ARMS["iql"]))
    (tmp_path / "iql").mkdir()
    (tmp_path / "iql" / "config.json").write_text(json.dumps(config.to_dict(first[0])))
    # A later session changes the `cpu` preset: the experiment keeps the settings it began with.
    changed = comparison.presets.preset("cpu").replace(batch_size=128)
    monkeypatch.setattr(comparison.presets, "preset", lambda name: changed)
    assert comparison.arm_configs(tmp_path, list(comparison.ARMS["iql"])) == first
    assert comparison.arm_configs(tmp_path / "new", ["iql"])[0].batch_size == 128
    fewer = comparison.SIZES["iql", "cpu"]._replace(seeds=4)
    with pytest.raises(
        RunDirError, match="pass --preset cpu --seeds 8 --offline-steps 20000 --online-steps"
    ):
        comparison.arm_configs(tmp_path, ["iql"], "iql", fewer)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"seed": -1}, "--seed must be >= 0"),
        # The default DiffusionConfig has no pretraining to share.
        ({"generator_from": "runs/edis"}, "--generator-from takes a pretrained generator"),
        ({"offline_steps": 0, "online_steps": 0}, "--offline-steps and --online-steps are both 0"),
        (
            {"diffusion": config.DiffusionConfig(train_steps=0)},
            "--diffusion.train-steps is 0 with EDIS",
        ),
        (
            {"online": config.OnlineConfig(num_samples=100), "batch_size": 256},
            r"--online.num-samples \(100\) is below the agent --batch-size \(256\)",
        ),
        (
            {"energy": config.EnergyConfig(level_stride=200)},
            r"--energy.level-stride \(200\) is beyond the 128-step sampler schedule",
        ),
    ],
)
def test_run_config_refuses_values_that_make_a_part_useless(changes, match):
    with pytest.raises(validation.ConfigError, match=match) as err:
        config.RunConfig(**changes)
    assert "\n" not in str(err.value)


def test_generator_checks_apply_only_where_the_generator_is_used():
    untrained = config.DiffusionConfig(train_steps=0)
    few = config.OnlineConfig(num_samples=100)
    wide = config.EnergyConfig(level_stride=200)
    for changes in ({"edis": False}, {"online_steps": 0}):
        config.RunConfig(diffusion=untrained, online=few, energy=wide, **changes)
    # A warm-started model pretrained on the offline data may be used without retraining.
    pretrained = config.DiffusionConfig(train_steps=0, warm_start=True, initial_steps=100)
    assert config.RunConfig(diffusion=pretrained).diffusion.train_steps == 0
    with pytest.raises(validation.ConfigError, match="train-steps is 0"):
        config.RunConfig(diffusion=config.DiffusionConfig(train_steps=0, warm_start=True))


@pytest.mark.parametrize("part", ["iql", "sac", "calql", "energy"])
@pytest.mark.parametrize("widths", [(), (256, 0)])
def test_empty_or_zero_width_networks_are_refused(part, widths):
    cls = {
        "iql": agent_configs.IQLConfig,
        "sac": agent_configs.SACConfig,
        "calql": agent_configs.CalQLConfig,
        "energy": config.EnergyConfig,
    }
    with pytest.raises(
        validation.ConfigError, match=rf"--{part}.hidden-dims must list one or more"
    ):
        cls[part](hidden_dims=widths)


def test_retrain_schedule_of_each_loop():
    clean = presets.preset("tiny").replace(online_steps=300)  # retrain_every 100
    calql = clean.replace(
        algo="calql", online=dataclasses.replace(clean.online, schedule="published")
    )
    iql = calql.replace(algo="iql")
    due = lambda cfg: [t for t in range(1, 300) if S.retrain_due(cfg, t)]  # noqa: E731
    assert due(clean) == due(iql) == [100, 200]
    assert due(calql) == [1, 100, 200]  # Cal-QL-EDIS also retrains after its first online step
    assert S.num_retrains(calql) == 3 and S.num_retrains(clean.replace(edis=False)) == 0
    # Only IQL-EDIS's published loop keeps synthetic rows out of its per-step updates.
    assert [S.synthetic_every_update(c) for c in (clean, iql, calql)] == [True, False, True]


def test_comparison_archives_the_finished_arms_results(tmp_path):
    """`--archive DIR` keeps what the report reads of each finished arm beyond the machine the
    run directories live on; a copy replaces an older one whole."""
    from benchmarks import comparison

    out, dest = tmp_path / "runs", tmp_path / "archive"
    for arm in ("iql", "iql_edis"):
        (out / arm / "checkpoints").mkdir(parents=True)
        for name in comparison.ARCHIVED:
            (out / arm / name).write_text(f"{arm} {name}")
    (dest / "iql").mkdir(parents=True)
    (dest / "iql" / "summary.json").write_text("older")
    comparison.archive([str(out / "iql"), str(out / "iql_edis")], dest)
    for arm in ("iql", "iql_edis"):
        assert sorted(p.name for p in (dest / arm).iterdir()) == sorted(comparison.ARCHIVED)
        for name in comparison.ARCHIVED:
            assert (dest / arm / name).read_text() == f"{arm} {name}"


def test_comparison_archive_failure_is_one_line_and_keeps_older_copies(
    tmp_path, monkeypatch, capsys
):
    """A copy that fails halfway (here a full disk) leaves the older archived copy and no
    partial file, and `comparison` ends with one line naming the problem and the fix."""
    import errno
    import shutil

    from benchmarks import comparison

    out, dest = tmp_path / "runs", tmp_path / "archive"
    saved = json.dumps(config.to_dict(comparison.base_config(tmp_path / "none")))
    for arm in ("iql", "iql_edis"):
        (out / arm).mkdir(parents=True)
        for name in comparison.ARCHIVED:
            (out / arm / name).write_text(saved if name == "config.json" else f"{arm} {name}")
    (dest / "iql").mkdir(parents=True)
    (dest / "iql" / "summary.json").write_text("older")
    copy = shutil.copyfile

    def full_disk(src, dst):
        copy(src, dst)  # the partial file exists when the error comes
        if Path(src).name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(comparison.shutil, "copyfile", full_disk)
    argv = ["--out", str(out), "--arms", "iql", "iql_edis", "--report-only"]
    assert comparison.main([*argv, "--archive", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "--archive" in err
    assert (dest / "iql" / "summary.json").read_text() == "older"
    assert not list(dest.rglob("*.tmp"))
