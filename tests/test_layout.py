"""The package layout (README's Layout): each layer imports only the layers below it; nothing
sits directly under edis_jax/ but the entry points, the two modules kept there and the old paths
of the moved modules, which still import for one release and warn with the new path."""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

import edis_jax

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edis_jax"
# The old module paths kept for one release (a shim each, edis_jax/<name>.py) and where they went.
MOVED = {
    "edis_jax.presets": "edis_jax.config.presets",
    "edis_jax.tasks": "edis_jax.config.tasks",
    "edis_jax.agent_configs": "edis_jax.config.agent_configs",
    "edis_jax.generator_configs": "edis_jax.config.generator_configs",
    "edis_jax.validation": "edis_jax.config.validation",
    "edis_jax.stats": "edis_jax.report.stats",
    "edis_jax.plots": "edis_jax.report.plots",
    "edis_jax.checkpoint": "edis_jax.storage.checkpoint",
}
# The packages and modules of edis_jax/, lowest layer first: each imports only itself and those
# before it. nets and generator are modules: nets is what agents, diffusion and energy all build
# on, the generator the one module joining diffusion and energy.
LAYERS = (
    "config", "storage", "data", "nets", "diffusion", "energy", "agents", "generator", "envs",
    "train", "datagen", "report", "diagnose", "cli", "make_run",
)  # fmt: skip
ENTRY_POINTS = {"__init__", "make_run"}  # and cli/, a package


@pytest.mark.parametrize(("old", "new"), MOVED.items())
def test_an_old_path_warns_and_is_the_moved_module(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)  # imported once already: import it anew
    monkeypatch.delattr(edis_jax, old.rsplit(".", 1)[1], raising=False)
    message = f"^{old} moved to {new}; the old path goes in the next release$"
    with pytest.warns(DeprecationWarning, match=message) as caught:
        module = __import__(old, fromlist=["__name__"])  # what `from <old> import x` runs
    ours = [w for w in caught if str(w.message).startswith(f"{old} moved")]  # not the new's own
    assert [w.filename for w in ours] == [__file__]  # the warning points at the importer
    assert module is importlib.import_module(new)  # the same objects, not copies
    assert getattr(edis_jax, old.rsplit(".", 1)[1]) is module  # `from edis_jax import <old>`


def test_only_entry_points_kept_modules_and_shims_sit_directly_under_edis_jax():
    shims = {old.rsplit(".", 1)[1]: new for old, new in MOVED.items()}
    kept = {name for name in LAYERS if (PACKAGE / f"{name}.py").exists()} - ENTRY_POINTS
    assert kept == {"nets", "generator"}  # README's Layout says why each stays
    assert {path.stem for path in PACKAGE.glob("*.py")} == ENTRY_POINTS | kept | set(shims)
    for name, new in shims.items():  # a shim is the one call, to the module its table names
        body = ast.parse((PACKAGE / f"{name}.py").read_text()).body
        calls = [ast.unparse(node) for node in body if isinstance(node, ast.Expr)][1:]
        assert calls == [f"_moved(__name__, {new!r})"]


def test_each_layer_imports_only_the_layers_below_it():
    arrows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer not in LAYERS:  # edis_jax/__init__.py and the shims
            continue
        for target, line in _imports(ast.parse(path.read_text())):
            imported = target.split(".")[1]
            if imported == "__version__":
                continue
            assert imported in LAYERS, f"{path.relative_to(ROOT)}:{line} imports {target}"
            if LAYERS.index(imported) > LAYERS.index(layer):
                arrows.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {target}")
    assert not arrows


def test_no_code_here_imports_an_old_path():
    sources = {
        path: path.read_text()
        for folder in ("edis_jax", "benchmarks", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path.stem not in {old.rsplit(".", 1)[1] for old in MOVED} or path.parent != PACKAGE
    }
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
        lines = "\n".join(code).splitlines()
        sources[path] = "\n".join(
            line for line in lines if not line.lstrip().startswith(("%", "!"))
        )
    old = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path, source in sources.items()
        for target, line in _imports(ast.parse(source))
        if target in MOVED
    ]
    assert not old


def _imports(tree: ast.Module):
    """(module, line) for each import of an edis_jax module; `from edis_jax import x` imports
    edis_jax.x."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("edis_jax."))
        elif isinstance(node, ast.ImportFrom) and node.module == "edis_jax":
            yield from ((f"edis_jax.{a.name}", node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edis_jax."):
            yield node.module, node.lineno
