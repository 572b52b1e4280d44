"""`python -m edis_jax.cli`: the `edis-jax` command."""

import sys

from edis_jax.cli import main

sys.exit(main())
