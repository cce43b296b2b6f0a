"""Halo centres and spherical-overdensity (SO) masses of FoF groups, as simulations report them.

The centre of a group is its densest member particle: the member with the smallest distance to
its ``k_density``-th nearest neighbour among all particles (a kNN density estimate), a proxy for
the potential minimum SUBFIND uses (``GroupPos``). ``M_Delta`` is then grown from that centre
over *all* particles (members or not, periodic distances): the sphere grows particle by
particle until the mean enclosed density first falls below ``Delta`` times the reference
density, and ``M_Delta`` is the mass of the particles inside it (as TNG's
``Group_M_Crit200`` for ``Delta = 200`` and the critical density). Lengths in Mpc/h, masses in
Msun/h, densities in Msun/h per (Mpc/h)^3.

A particle-mesh run cannot resolve ``R200c`` below a few force-mesh cells (its halo cores are
as wide as the mesh smoothing): at 0.5 Mpc/h mean spacing on a 2x mesh the directly grown
M200c of 30-200 particle halos is 0.15-0.6 of their FoF mass, and their abundance 1/3-2/3 of
Tinker+08. :func:`m200c` therefore keeps the grown M200c where ``R200c`` spans at least
``min_radius`` (a few mesh cells) and elsewhere converts the FoF mass, taken as ``M200m``
(More et al. 2011 for b = 0.2), to M200c for an NFW profile with the Diemer & Joyce (2019)
concentration (colossus). That keeps the M200c mass function within ~20% of Tinker+08.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from dm2gal.sim.cosmology import Cosmology


@dataclass
class SOHalos:
    """Centres and SO masses of a list of groups.

    Attributes:
        centre: ``(n, 3)`` densest member particle of each group, Mpc/h in ``[0, box)``.
        mass: ``(n,)`` ``M_Delta``, Msun/h (a whole number of particle masses, >= 1).
        radius: ``(n,)`` ``R_Delta``: the distance of the last particle inside, Mpc/h.
    """

    centre: np.ndarray
    mass: np.ndarray
    radius: np.ndarray


def densest_members(
    tree: cKDTree, pos: np.ndarray, labels: np.ndarray, n_groups: int, k_density: int = 8
) -> np.ndarray:
    """Index of the densest member particle of each group (smallest k-th neighbour distance).

    Args:
        tree: periodic KD-tree of all particle positions ``pos``.
        pos: ``(n, 3)`` particle positions, Mpc/h.
        labels: ``(n,)`` group index of each particle, -1 outside groups.
        n_groups: number of groups (labels run over ``0..n_groups-1``, each non-empty).
        k_density: neighbour rank of the density estimate.
    """
    member = np.flatnonzero(labels >= 0)
    dist, _ = tree.query(pos[member], k=k_density + 1)  # the particle itself comes first
    radius = dist[:, -1]
    # sort by group, then by radius: the first entry of each group is its densest member
    order = np.lexsort((radius, labels[member]))
    sorted_labels = labels[member][order]
    first = np.searchsorted(sorted_labels, np.arange(n_groups))
    return member[order[first]]


def _enclosed_mass_count(
    tree: cKDTree, pos: np.ndarray, centre: np.ndarray, radius: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow spheres within ``radius`` from ``centre``; threshold in particles per (Mpc/h)^3.

    Returns ``(count, r_last, done)``: particles inside at the first crossing, the distance of
    the last of them, and whether the crossing happened inside ``radius``.
    """
    box = tree.boxsize[0]
    lists = tree.query_ball_point(centre, radius)
    sizes = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    idx = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    halo = np.repeat(np.arange(len(centre)), sizes)
    offset = pos[idx] - centre[halo]
    offset -= box * np.round(offset / box)
    dist = np.sqrt(np.einsum("ij,ij->i", offset, offset))
    order = np.lexsort((dist, halo))
    dist, halo = dist[order], halo[order]
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(dist)) - start[halo]  # 0 for the closest particle
    # mean density inside the sphere through particle `rank`, counting it: (rank + 1) / V
    below = (rank + 1) < threshold * (4.0 / 3.0 * np.pi) * dist**3
    hit = np.flatnonzero(below)
    first_hit = np.full(len(centre), np.iinfo(np.int64).max)
    np.minimum.at(first_hit, halo[hit], rank[hit])
    done = first_hit < np.iinfo(np.int64).max
    count = np.where(done, first_hit, sizes)
    last = start + np.maximum(count - 1, 0)
    r_last = np.where(count > 0, dist[np.minimum(last, len(dist) - 1)], 0.0)
    return count, r_last, done


def spherical_overdensity(
    pos: np.ndarray,
    box: float,
    labels: np.ndarray,
    sizes: np.ndarray,
    particle_mass: float,
    density: float,
    k_density: int = 8,
) -> SOHalos:
    """Densest-particle centres and ``M_Delta`` of FoF groups (periodic).

    Args:
        pos: ``(n, 3)`` particle positions, Mpc/h.
        box: periodic box side, Mpc/h.
        labels: ``(n,)`` group index of each particle (-1 outside groups), as from FoF.
        sizes: ``(n_groups,)`` member count of each group.
        particle_mass: mass of one particle, Msun/h.
        density: the SO threshold ``Delta * rho_ref``, Msun/h per (Mpc/h)^3 (for M200c:
            ``200 * RHO_CRIT`` at z=0).
        k_density: neighbour rank of the density estimate that picks the centre.
    """
    if not density > 0 or not particle_mass > 0:
        raise ValueError(f"density and particle_mass must be > 0, got {density}, {particle_mass}")
    pos = np.mod(np.asarray(pos, dtype=np.float64), box)
    pos[pos >= box] = 0.0
    n_groups = len(sizes)
    if n_groups == 0:
        return SOHalos(np.empty((0, 3)), np.empty(0), np.empty(0))
    tree = cKDTree(pos, boxsize=box)
    centre = pos[densest_members(tree, pos, labels, n_groups, k_density)]
    threshold = density / particle_mass  # particles per (Mpc/h)^3
    # first guess: the radius at which the whole FoF mass would sit at the threshold density
    radius = 1.2 * (3.0 * np.asarray(sizes, dtype=float) / (4.0 * np.pi * threshold)) ** (1 / 3)
    radius = np.minimum(radius, 0.49 * box)
    count = np.zeros(n_groups, dtype=np.int64)
    r_last = np.zeros(n_groups)
    todo = np.arange(n_groups)
    while len(todo):
        c, r, done = _enclosed_mass_count(tree, pos, centre[todo], radius[todo], threshold)
        count[todo], r_last[todo] = c, r
        capped = radius[todo] >= 0.49 * box
        todo = todo[~done & ~capped]
        radius[todo] = np.minimum(2.0 * radius[todo], 0.49 * box)
    return SOHalos(centre=centre, mass=count * particle_mass, radius=r_last)


def m200c_from_fof(fof_mass: np.ndarray, cosmo: Cosmology) -> np.ndarray:
    """M200c (Msun/h) of z=0 NFW halos whose ``M200m`` is the FoF mass (b = 0.2)."""
    from colossus.halo import concentration, mass_defs

    fof_mass = np.asarray(fof_mass, dtype=float)
    if len(fof_mass) == 0:
        return fof_mass
    cosmo.colossus()
    # the ratio varies slowly with mass: convert on a grid and interpolate in log-log
    grid = np.geomspace(fof_mass.min() / 1.1, fof_mass.max() * 1.1, 24)
    conc = concentration.concentration(grid, "200m", 0.0, model="diemer19")
    converted = [
        mass_defs.changeMassDefinition(m, c, 0.0, "200m", "200c")[0]
        for m, c in zip(grid, conc, strict=True)
    ]
    return np.exp(np.interp(np.log(fof_mass), np.log(grid), np.log(converted)))


def m200c(so: SOHalos, fof_mass: np.ndarray, cosmo: Cosmology, min_radius: float) -> np.ndarray:
    """Grown M200c where ``R200c >= min_radius`` (Mpc/h), else the NFW conversion of FoF."""
    converted = m200c_from_fof(fof_mass, cosmo)
    return np.where(so.radius >= min_radius, so.mass, converted)
