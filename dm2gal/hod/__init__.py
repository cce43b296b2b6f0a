"""HOD benchmarks: stellar-mass fields from halo occupation models fitted on the training region.

``BinnedHOD`` is the paper's empirical model, ``Zheng07HOD`` the standard parametric one. Both
are fitted on galaxies outside the held-out regions only and painted with CIC like the target.
"""

from __future__ import annotations

import numpy as np

from dm2gal.hod.base import HOD, IsHeldout
from dm2gal.hod.binned import BinnedHOD
from dm2gal.hod.zheng07 import Zheng07HOD
from dm2gal.io.catalog import CATALOGS_FILE, load_catalogs
from dm2gal.io.store import FieldStore

__all__ = ["HOD", "BinnedHOD", "Zheng07HOD", "build_hod_field"]


def build_hod_field(hod: HOD, store: FieldStore, is_heldout: IsHeldout, seed: int) -> np.ndarray:
    """Fit ``hod`` on the store's catalogues outside ``is_heldout`` and paint it on its grid.

    Returns the stellar mass per voxel (Msun/h, float32 ``grid^3``); writing it is the caller's
    choice (``store.write(f"hod_{hod.name}", field, ...)``).
    """
    path = store.root / CATALOGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no halo/galaxy catalogues to fit the HOD '{hod.name}'")
    halos, galaxies = load_catalogs(path)
    box, grid = store.box, store.grid
    return hod.fit(halos, galaxies, is_heldout, box).paint(halos, grid, box, seed)
