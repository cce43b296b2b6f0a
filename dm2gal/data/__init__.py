"""Training data: splits with guard bands, periodic crops, cube symmetries, samplers."""

from dm2gal.data.datamodule import FieldDataModule
from dm2gal.data.regions import Region
from dm2gal.data.sampler import MassBinSampler, UniformSampler
from dm2gal.data.splits import Splits, make_splits
from dm2gal.data.transforms import FieldTransform

__all__ = [
    "FieldDataModule",
    "FieldTransform",
    "MassBinSampler",
    "Region",
    "Splits",
    "UniformSampler",
    "make_splits",
]
