"""EDM diffusion: preconditioning and loss (edm), train state and loop (model), Heun sampler."""

from edis_jax.diffusion import edm, model, sampler
from edis_jax.diffusion.model import DiffusionState
from edis_jax.diffusion.sampler import Condition, Schedule

__all__ = ["edm", "model", "sampler", "DiffusionState", "Condition", "Schedule"]
