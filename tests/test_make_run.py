"""make_run.run_or_continue: an interrupted arm continues, a finished arm is kept, a baseline
without the state its arms start from is redone."""

import json
import shutil

import pytest
from tiny_runs import tiny

from edis_jax import make_run
from edis_jax.storage import checkpoint
from edis_jax.train import loop


def test_run_or_continue_continues_an_interrupted_run_and_keeps_a_finished_one(
    datasets_env, tmp_path, capsys
):
    # The config holds tuples (hidden_dims, guide) that config.json reads back as lists: the
    # comparison must still find the saved run the same, or it retrains (or refuses) instead.
    cfg = tiny(tmp_path, "arm", edis=False, overwrite=True)  # as make_run's arms are
    loop.train(cfg, stop_at_online_step=60, progress=False)
    assert not (tmp_path / "arm" / "summary.json").exists()

    # A config.json written before a field existed (here generator_from) is still this config.
    saved = tmp_path / "arm" / "config.json"
    older = {k: v for k, v in json.loads(saved.read_text()).items() if k != "generator_from"}
    saved.write_text(json.dumps(older))

    # Asked again to stop there (a comparison continued with only the arms that start from
    # it): the state the arms take is saved already, so nothing is redone.
    def must_not_run(*args, **kwargs):
        raise AssertionError("the baseline was continued although it holds its arms' start")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "resume", must_not_run)
        patch.setattr(loop, "train", must_not_run)
        make_run.run_or_continue(cfg, stop_at_online_step=60)
    assert "holds the state at online step 60 already, kept" in capsys.readouterr().out

    make_run.run_or_continue(cfg)
    assert "continuing from its latest checkpoint" in capsys.readouterr().out
    metrics = (tmp_path / "arm" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "arm" / "summary.json").is_file()

    make_run.run_or_continue(cfg)
    assert "finished earlier, kept" in capsys.readouterr().out
    assert (tmp_path / "arm" / "metrics.jsonl").read_bytes() == metrics

    # A baseline written before baselines kept their first-retrain state: the EDIS arms could
    # not start from it, so it is trained again (bitwise the same run), this time keeping it.
    kept = tmp_path / "arm" / checkpoint.FIRST_RETRAIN_DIR
    assert kept.is_dir()
    shutil.rmtree(kept)
    make_run.run_or_continue(cfg)  # no arm starts there (as in the comparison): kept as it is
    assert "finished earlier, kept" in capsys.readouterr().out
    make_run.run_or_continue(cfg, arms_start_at_first_retrain=True)
    assert "redone" in capsys.readouterr().out
    assert kept.is_dir()
    assert (tmp_path / "arm" / "metrics.jsonl").read_bytes() == metrics
