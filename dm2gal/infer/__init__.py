"""Whole-volume inference: tiled prediction and quantile calibration."""
