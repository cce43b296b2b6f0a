"""dm2gal: paint galaxies onto gravity-only simulations with 3D convolutional networks."""

__version__ = "0.1.0"
