"""benchmarks.bitwise_check's bookkeeping, without its runs: what a summary's hash leaves out, and
one reference per machine (the runs themselves take minutes: `python -m benchmarks.bitwise_check`)."""

import json

import pytest

from benchmarks import bitwise_check
from edis_jax.train import records

AVX512 = {"jax": "0.12.1", "cpu": "AMD EPYC; avx512f", "XLA_FLAGS": ""}
AVX2 = {"jax": "0.12.1", "cpu": "AMD EPYC; avx2", "XLA_FLAGS": ""}


def test_a_summarys_hash_leaves_out_what_the_machine_decides():
    summary = {
        "final_score": {"mean": 12.5, "std": 1.0, "per_seed": [11.5, 13.5]},
        "wall_time_s": {"offline": 3.0, "online": 4.0, "total": 7.0},
        "env_steps_per_s": 10.0,
        "updates_per_s": 20.0,
        "machine": {**AVX2, "load_average": [1.0, 2.0, 3.0]},
    }
    elsewhere = {
        **summary,
        "wall_time_s": {"offline": 9.0, "online": 1.0, "total": 10.0},
        "env_steps_per_s": 1.0,
        "updates_per_s": 2.0,
        "machine": {**AVX512, "load_average": [5.0, 5.0, 5.0]},
    }
    assert set(summary) - {"final_score"} == set(records.MEASURED)
    assert bitwise_check.summary_hash(summary) == bitwise_check.summary_hash(elsewhere)
    other_score = {**summary, "final_score": {"mean": 12.5, "std": 1.0, "per_seed": [13.5, 11.5]}}
    assert bitwise_check.summary_hash(other_score) != bitwise_check.summary_hash(summary)


@pytest.fixture
def references(tmp_path, monkeypatch):
    """A reference file with an AVX-512 machine's hashes, this machine an AVX2 one, and runs
    replaced by a dict of hashes the test sets."""
    path = tmp_path / "bitwise_reference.json"
    stored = {"environment": AVX512, "commit": "aaaaaaa", "hashes": {"iql": {"summary.json": "1"}}}
    path.write_text(json.dumps({"references": [stored]}))
    monkeypatch.setattr(bitwise_check, "REFERENCE", path)
    monkeypatch.setattr(records, "environment", lambda: dict(AVX2))
    hashes = {"iql": {"summary.json": "2"}, "iql_edis": {"x": "3"}, "iql_edis_resumed": {"x": "3"}}
    monkeypatch.setattr(bitwise_check, "run_all", lambda root: json.loads(json.dumps(hashes)))
    return path, hashes


def test_check_refuses_in_one_line_where_no_reference_was_made_on_such_a_machine(
    references, capsys
):
    path, _ = references
    assert bitwise_check.main(["--check"]) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    assert "no reference was made on a machine like this one" in out
    assert "avx2" in out and "avx512f" in out and "aaaaaaa" in out and "--write" in out


def test_write_adds_this_machines_reference_and_check_compares_with_it_only(references, capsys):
    path, hashes = references
    assert bitwise_check.main(["--write"]) == 0
    stored = json.loads(path.read_text())["references"]
    assert [r["environment"] for r in stored] == [AVX512, AVX2]  # the other machine's is kept
    assert stored[0]["hashes"] == {"iql": {"summary.json": "1"}}
    assert stored[1]["hashes"] == hashes and stored[1]["commit"]

    capsys.readouterr()
    assert bitwise_check.main(["--check"]) == 0
    assert "bitwise identical to the reference of commit" in capsys.readouterr().out

    hashes["iql"]["summary.json"] = "changed"
    assert bitwise_check.main(["--check"]) == 1
    assert "DIFFERENT from the reference" in (out := capsys.readouterr().out)
    assert "iql/summary.json" in out

    # Written again on this machine: its reference is replaced, not added twice.
    assert bitwise_check.main(["--write"]) == 0
    stored = json.loads(path.read_text())["references"]
    assert len(stored) == 2 and stored[1]["hashes"]["iql"]["summary.json"] == "changed"


def test_a_write_that_fails_halfway_leaves_every_reference_as_it_was(references, monkeypatch):
    """The file holds other machines' references, written on machines that may not be at hand:
    a --write that fails (here: the disk is full when the new file would replace it) keeps it."""
    from edis_jax.storage import output_paths

    path, _ = references
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_paths.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        bitwise_check.main(["--write"])
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind
