"""Periodic friends-of-friends (FoF) groups.

Particles closer than the linking length (periodic distance) are friends; groups are the
connected components of the friendship graph (scipy ``cKDTree`` with ``boxsize`` and
``scipy.sparse.csgraph.connected_components``). Positions in Mpc/h.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass
class FoFGroups:
    """FoF groups, largest first.

    Attributes:
        labels: ``(n,)`` group index of each particle, -1 if not in a kept group.
        size: ``(n_groups,)`` number of member particles.
        centre: ``(n_groups, 3)`` periodic centre of mass in ``[0, box)``, Mpc/h.
    """

    labels: np.ndarray
    size: np.ndarray
    centre: np.ndarray

    def __len__(self) -> int:
        return len(self.size)

    def members(self) -> list[np.ndarray]:
        """Particle indices of each group (ascending)."""
        order = np.argsort(self.labels, kind="stable")
        start = np.searchsorted(self.labels[order], 0)
        bounds = np.cumsum(self.size)
        return np.split(order[start:], bounds[:-1])


def friends_of_friends(
    pos: np.ndarray, box: float, linking_length: float, min_members: int = 2
) -> FoFGroups:
    """Find periodic FoF groups with at least ``min_members`` particles.

    Args:
        pos: ``(n, 3)`` positions in Mpc/h (wrapped into ``[0, box)``).
        box: periodic box side, Mpc/h.
        linking_length: absolute linking length, Mpc/h (``b`` times the mean spacing).
        min_members: smallest group kept.
    """
    if not box > 0:
        raise ValueError(f"box must be > 0 Mpc/h, got {box}")
    if not 0 < linking_length < box / 2:
        raise ValueError(f"linking_length must be in (0, box/2), got {linking_length}")
    if min_members < 1:
        raise ValueError(f"min_members must be >= 1, got {min_members}")
    pos = np.mod(np.asarray(pos, dtype=np.float64), box)
    pos[pos >= box] = 0.0
    n = len(pos)
    pairs = cKDTree(pos, boxsize=box).query_pairs(linking_length, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), (n, n))
    del pairs
    _, raw = connected_components(graph, directed=False)
    del graph

    counts = np.bincount(raw)
    keep = np.flatnonzero(counts >= min_members)
    first = np.full(len(counts), n, dtype=np.int64)
    np.minimum.at(first, raw, np.arange(n))
    order = keep[np.lexsort((first[keep], -counts[keep]))]  # largest first, then by first member
    relabel = np.full(len(counts), -1, dtype=np.int64)
    relabel[order] = np.arange(len(order))
    labels = relabel[raw]

    member = labels >= 0
    idx = labels[member]
    anchor = pos[first[order]]
    offset = pos[member] - anchor[idx]
    offset -= box * np.round(offset / box)
    size = counts[order]
    centre = np.empty((len(order), 3))
    for axis in range(3):
        mean_offset = np.bincount(idx, weights=offset[:, axis], minlength=len(order)) / size
        centre[:, axis] = anchor[:, axis] + mean_offset
    centre = np.mod(centre, box)
    centre[centre >= box] = 0.0
    return FoFGroups(labels=labels, size=size, centre=centre)
