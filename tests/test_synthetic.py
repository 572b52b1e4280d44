"""train/synthetic.py: the digest that decides whether a run may take another's pretraining."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
from test_state import offline_data

from edis_jax import config
from edis_jax.config import presets
from edis_jax.train import state as S
from edis_jax.train import synthetic


def tiny_run(cfg: config.RunConfig) -> SimpleNamespace:
    """What `pretraining_digest` reads of a run: its config, state and seed keys."""
    return SimpleNamespace(
        cfg=cfg, state=S.init_state(cfg, offline_data(), 1.0), keys=S.seed_keys(cfg)
    )


def test_pretraining_digest_covers_every_input_and_nothing_else():
    cfg = config.with_values(
        presets.preset("tiny"),
        {"edis": True, "diffusion.warm_start": True, "diffusion.initial_steps": 10},
    )
    run = tiny_run(cfg)
    digest = synthetic.pretraining_digest(run)
    assert synthetic.pretraining_digest(tiny_run(cfg)) == digest  # rebuilt: the same

    def with_state(**parts):
        return SimpleNamespace(**{**vars(run), "state": run.state.replace(**parts)})

    gen, real = run.state.generator, run.state.real
    bumped = real.data.replace(reward=real.data.reward.at[0, 0].add(1.0))
    changed = {
        "one offline reward": with_state(real=real.replace(data=bumped)),
        "the diffusion model": with_state(
            generator=gen.replace(diffusion=jax.tree.map(lambda x: x + 1, gen.diffusion))
        ),
        "the normaliser": with_state(
            generator=gen.replace(normalizer=jax.tree.map(lambda x: x * 2, gen.normalizer))
        ),
        "the seed keys": SimpleNamespace(**{**vars(run), "keys": S.seed_keys(cfg.replace(seed=1))}),
        # A setting that leaves every array alone (the sampler's steps) still counts.
        "a diffusion setting": SimpleNamespace(
            **{**vars(run), "cfg": config.with_values(cfg, {"diffusion.num_steps": 8})}
        ),
    }
    for what, other in changed.items():
        assert synthetic.pretraining_digest(other) != digest, what
    # The energies, the guidance and the online settings are no input of the pretraining: runs
    # that differ in them share it.
    same = {
        "the energies": with_state(
            generator=gen.replace(energies=jax.tree.map(jnp.zeros_like, gen.energies))
        ),
        "guidance and online settings": SimpleNamespace(
            **{**vars(run), "cfg": config.with_values(cfg, {"guide": (), "online.utd": 3})}
        ),
    }
    for what, other in same.items():
        assert synthetic.pretraining_digest(other) == digest, what


def test_pretraining_digest_leaves_out_settings_an_older_run_did_not_write(tmp_path):
    """Compared with a run written before a diffusion setting existed, the digest leaves that
    setting out, as the older run's own digest did (load_pretrained checks separately that it
    holds its default). Compared with a run that wrote every setting, nothing is left out."""
    cfg = config.with_values(
        presets.preset("tiny"),
        {"edis": True, "diffusion.warm_start": True, "diffusion.initial_steps": 10},
    )
    run = tiny_run(cfg)
    written = config.to_dict(cfg)
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert synthetic.pretraining_digest(run, tmp_path) == synthetic.pretraining_digest(run)

    del written["diffusion"]["inpainting"]  # as a run written before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(written))
    older = synthetic.pretraining_digest(run, tmp_path)
    assert older != synthetic.pretraining_digest(run)
    noised = SimpleNamespace(
        **{**vars(run), "cfg": config.with_values(cfg, {"diffusion.inpainting": "noised"})}
    )
    assert synthetic.pretraining_digest(noised, tmp_path) == older  # left out
    assert synthetic.pretraining_digest(noised) != synthetic.pretraining_digest(run)
