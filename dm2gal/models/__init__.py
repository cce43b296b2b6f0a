"""Networks from input-field crops to target-field crops; each declares its context."""

from dm2gal.models.base import FieldNet, count_parameters
from dm2gal.models.mixture import OccupancyMixture
from dm2gal.models.occupancy import OccupancyNet
from dm2gal.models.paper import PaperNet
from dm2gal.models.probabilistic import ProbabilisticNet
from dm2gal.models.resnet3d import ResNet3d
from dm2gal.models.twophase import TwoPhaseNet
from dm2gal.models.unet3d import UNet3d

__all__ = [
    "FieldNet",
    "OccupancyMixture",
    "OccupancyNet",
    "PaperNet",
    "ProbabilisticNet",
    "ResNet3d",
    "TwoPhaseNet",
    "UNet3d",
    "count_parameters",
]
