"""The EDIS energies: networks and optimiser (model), CEP training (cep), guidance (guidance)."""

from edis_jax.energy import cep, guidance, model
from edis_jax.energy.cep import NegativeBank
from edis_jax.energy.guidance import Guidance, make_guidance
from edis_jax.energy.model import EnergySet

__all__ = ["cep", "guidance", "model", "NegativeBank", "Guidance", "make_guidance", "EnergySet"]
