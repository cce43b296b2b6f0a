"""The names of a prediction's fields in a field store, and the seeds of its draws."""

from __future__ import annotations

from dataclasses import dataclass

from dm2gal.errors import integer_option


def draw_seeds(seed: int, samples: int) -> list[int]:
    """The seeds of ``samples`` draws (the options of those names): ``seed``, ``seed + 1``, ...,
    one per draw."""
    samples = integer_option(samples, "samples", minimum=0)
    seed = integer_option(seed, "seed", minimum=0)
    return list(range(seed, seed + samples))


@dataclass(frozen=True)
class PredictionNames:
    """The fields of prediction ``name`` with ``samples`` draws: ``name`` alone without draws,
    else ``<name>_mean`` and ``<name>_draw_<i>``; the calibrated mean ``<mean>_calibrated``."""

    name: str
    samples: int = 0

    @property
    def mean(self) -> str:
        return f"{self.name}_mean" if self.samples else self.name

    @property
    def draws(self) -> list[str]:
        return [f"{self.name}_draw_{i}" for i in range(self.samples)]

    @property
    def calibrated(self) -> str:
        return f"{self.mean}_calibrated"
