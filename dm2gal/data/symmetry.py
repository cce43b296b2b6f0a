"""The 48 symmetries of the cube (axis permutations x flips), applied to the last 3 axes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dm2gal.errors import ConfigError

AUGMENTS = ("all48", "rotations24", "none")


@dataclass(frozen=True)
class Symmetry:
    """Flip the spatial axes marked in ``flips``, then reorder them as ``perm``.

    Acts on the last three axes of an array, so every channel of a ``(C, n, n, n)`` crop (and
    a concentric input / target pair) is mapped identically.
    """

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def det(self) -> int:
        """Determinant of the signed permutation matrix: +1 for a rotation, -1 otherwise."""
        inversions = sum(a > b for a, b in itertools.combinations(self.perm, 2))
        return (-1) ** (inversions + sum(self.flips))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return the transformed array as a view (copy it before handing it to torch)."""
        lead = x.ndim - 3
        for ax, flip in enumerate(self.flips):
            if flip:
                x = np.flip(x, axis=lead + ax)
        return x.transpose(*range(lead), *(lead + p for p in self.perm))


SYMMETRIES: tuple[Symmetry, ...] = tuple(
    Symmetry(perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((False, True), repeat=3)
)


def symmetry_group(augment: str) -> tuple[Symmetry, ...]:
    """The symmetries of ``augment``: "all48", "rotations24" (det +1) or "none" (identity)."""
    if augment == "all48":
        return SYMMETRIES
    if augment == "rotations24":
        return tuple(s for s in SYMMETRIES if s.det == 1)
    if augment == "none":
        return SYMMETRIES[:1]
    raise ConfigError(f"data.augment: expected one of {AUGMENTS}, got {augment!r}")
