"""The quickstart notebook runs headless, top to bottom, at the tiny preset."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("EDIS_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("EDIS_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "final score" in outputs and "| IQL-EDIS |" in outputs
    assert (tmp_path / "curves.png").is_file()
    assert os.path.getsize(tmp_path / "curves.png") > 10_000
