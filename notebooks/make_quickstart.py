"""Writes quickstart.ipynb from the cells below (edit here, then run this file)."""

from pathlib import Path

import nbformat as nbf

CELLS = [
    (
        "md",
        """# edis-jax quickstart

Build a small dataset, train IQL with and without EDIS for a few seeds (one compiled program per
run), plot the learning curves, and compare generated transitions with real ones.

`PRESET` defaults to `tiny` (a minute on a laptop CPU; the test suite runs it headless). Set the
environment variable `EDIS_NOTEBOOK_PRESET=cpu` for a run whose curves mean something.""",
    ),
    (
        "code",
        """import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from edis_jax import agents, config, edis, report
from edis_jax.data import buffer, builder, datasets
from edis_jax.train import loop

PRESET = os.environ.get("EDIS_NOTEBOOK_PRESET", "tiny")
WORK = Path(os.environ.get("EDIS_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="edis-quickstart-"))
os.environ["MINARI_DATASETS_PATH"] = str(WORK / "datasets")
print("preset", PRESET, "| working in", WORK)""",
    ),
    (
        "md",
        "## 1. A small dataset\n\nA `random` Hopper-v5 dataset builds in seconds; `medium` trains a SAC behaviour policy first.",
    ),
    (
        "code",
        """DATASET = "quickstart/hopper/random-v0"
steps = 2_000 if PRESET == "tiny" else 20_000
builder.make_dataset("Hopper-v5", "random", steps, DATASET, seed=0, progress=False)
data = datasets.load_dataset(DATASET)
print(len(data), "transitions,", len(data.episode_returns), "episodes, mean return",
      round(float(data.episode_returns.mean()), 1))""",
    ),
    ("md", "## 2. IQL against IQL-EDIS, several seeds each"),
    (
        "code",
        """base = config.preset(PRESET).replace(algo="iql", dataset=DATASET, seeds=2, overwrite=True)
if PRESET == "tiny":
    base = base.replace(online_steps=120, eval_every=60, log_every=30, checkpoint_every=60,
                        online=config.OnlineConfig(retrain_every=60, num_samples=256))
runs = {}
for use_edis in (False, True):
    cfg = base.replace(edis=use_edis, out=str(WORK / ("iql_edis" if use_edis else "iql")))
    runs[use_edis] = loop.train(cfg, progress=False)
    print(report.label({"config": config.to_dict(cfg)}), "final score",
          runs[use_edis]["final_score"])""",
    ),
    (
        "code",
        """table, png = report.report([str(WORK / "iql"), str(WORK / "iql_edis")], out=str(WORK / "curves.png"))
print(table)
plt.imshow(plt.imread(png))
plt.axis("off")
plt.show()""",
    ),
    (
        "md",
        """## 3. Generated against real transitions

Train one generator directly (the run above does this every `retrain_every` steps), sample, and
compare the marginals of a few dimensions with the real data.""",
    ),
    (
        "code",
        """cfg = base
real = buffer.from_transitions(jax.tree.map(jnp.asarray, data.transitions))
key = jax.random.PRNGKey(0)
agent = agents.get("iql").create(key, data.transitions.obs_dim, data.transitions.act_dim, cfg.iql)
gen = edis.create(key, data.transitions.obs_dim, data.transitions.act_dim, cfg.diffusion, cfg.energy)
gen, metrics = jax.jit(edis.retrain)(gen, real, real, agents.policy("iql", agent), key)
fake = edis.generate(gen, jax.random.PRNGKey(1), 1024)
print({k: round(float(v), 3) for k, v in metrics.items()})""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (name, i) in zip(axes, [("obs[0] (height)", 0), ("obs[1] (angle)", 1), ("reward", None)], strict=True):
    r = data.transitions.reward if i is None else data.transitions.obs[:, i]
    f = np.asarray(fake.reward if i is None else fake.obs[:, i])
    bins = np.linspace(*np.percentile(r, [1, 99]), 40)
    ax.hist(r, bins, density=True, alpha=0.5, label="real")
    ax.hist(f, bins, density=True, alpha=0.5, label="generated")
    ax.set_title(name)
axes[0].legend()
plt.tight_layout()
plt.show()
print("mean |generated - real| of the per-dimension means (normalised units):",
      float(np.abs((np.asarray(fake.obs).mean(0) - data.transitions.obs.mean(0))
                   / (data.transitions.obs.std(0) + 1e-3)).mean()))""",
    ),
]


def build() -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        for kind, src in CELLS
    ]
    return nb


if __name__ == "__main__":
    path = Path(__file__).with_name("quickstart.ipynb")
    nbf.write(build(), path)
    print("wrote", path)
