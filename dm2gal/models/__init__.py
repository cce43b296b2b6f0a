"""Networks from input-field crops to target-field crops; each declares its context."""

from dm2gal.models.base import FieldNet, count_parameters
from dm2gal.models.paper import PaperNet
from dm2gal.models.resnet3d import ResNet3d
from dm2gal.models.twophase import TwoPhaseNet
from dm2gal.models.unet3d import UNet3d

__all__ = ["FieldNet", "PaperNet", "ResNet3d", "TwoPhaseNet", "UNet3d", "count_parameters"]
