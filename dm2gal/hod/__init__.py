"""HOD benchmarks: stellar-mass fields from halo occupation models fitted on the training region.

``BinnedHOD`` is the paper's empirical model (with ``env_bins`` > 1 it also knows the
environment), ``Zheng07HOD`` the standard parametric one, ``DecoratedHOD`` Zheng07 with
environmental assembly bias. All are fitted on galaxies outside the held-out regions only and
give a mean field and random draws, painted with CIC like the target
(:mod:`dm2gal.hod.fitting`).
"""

from __future__ import annotations

from dm2gal.hod.base import HOD, IsHeldout
from dm2gal.hod.binned import BinnedHOD
from dm2gal.hod.decorated import DecoratedHOD
from dm2gal.hod.environment import Environment
from dm2gal.hod.fitting import draw_name, fit_on_stores, mean_name, paint_on_store
from dm2gal.hod.zheng07 import Zheng07HOD

__all__ = [
    "HOD",
    "BinnedHOD",
    "DecoratedHOD",
    "Environment",
    "IsHeldout",
    "Zheng07HOD",
    "draw_name",
    "fit_on_stores",
    "mean_name",
    "paint_on_store",
]
