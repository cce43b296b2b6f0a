"""The embedded mock universe: ICs, 2LPT, particle-mesh gravity, FoF halos and galaxies."""

from dm2gal.sim.mock import MockUniverse

__all__ = ["MockUniverse"]
