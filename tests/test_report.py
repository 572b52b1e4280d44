"""Report labels: each run is named by its algorithm, EDIS and guidance, and runs that would
share a name are told apart by their directories."""

from edis_jax import report


def fake_run(directory: str, edis: bool, guide=("state", "policy", "transition")) -> dict:
    config = {"algo": "iql", "edis": edis, "online_steps": 10, "guide": list(guide)}
    return {"dir": directory, "config": config}


def test_labels_name_runs_and_tell_equal_names_apart():
    runs = [
        fake_run("runs/a/iql", edis=False),
        fake_run("runs/a/iql_edis", edis=True),
        fake_run("runs/b/iql_edis_cep500", edis=True),
        fake_run("runs/c/state_only", edis=True, guide=("state",)),
    ]
    assert report.labels(runs) == [
        "IQL",
        "IQL-EDIS (iql_edis)",
        "IQL-EDIS (iql_edis_cep500)",
        "IQL-EDIS [state]",
    ]
