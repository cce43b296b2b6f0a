"""Conditioning a network on a universe's parameters (cosmology, galaxy physics): FiLM.

A :class:`FiLM` maps the parameter vector, normalised to [-1, 1] by the training ranges it
keeps in buffers (so checkpoints and exported models carry them), through a small MLP to a
per-channel scale and shift of every block of a network (Perez et al. 2018). Its last layer
starts at zero: an untrained FiLM is the identity and the network equals the unconditioned one.
``model.conditioning=none`` builds no FiLM at all: the network's parameters and outputs are
those of an unconditioned one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from dm2gal.errors import ConfigError

CONDITIONINGS = ("none", "film")
#: width of the hidden layer of the parameter MLP
HIDDEN = 64
Style = tuple[torch.Tensor, torch.Tensor] | None


def check_conditioning(value: str, parameters: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """``(conditioning, parameter names)`` when they can work, else a :class:`ConfigError`
    naming ``model.conditioning`` / ``model.parameters``."""
    if value not in CONDITIONINGS:
        raise ConfigError(f"model.conditioning: expected one of {CONDITIONINGS}, got {value!r}")
    names = tuple(str(n) for n in parameters or ())
    if value != "none" and not names:
        raise ConfigError(
            f"model.parameters: model.conditioning={value} needs the names of the parameters it "
            "is conditioned on (a multi-universe data config, e.g. data=mock_lh), got none"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"model.parameters: names must be distinct, got {list(names)}")
    return value, names if value != "none" else ()


class FiLM(nn.Module):
    """Per-channel ``(scale, shift)`` of each of a network's blocks from its parameters.

    Args:
        names: the parameter names, in the order of the parameter vector's columns.
        widths: the channels of each modulated block, in the order the network applies them.
        hidden: width of the MLP's hidden layer.
    """

    def __init__(self, names: Sequence[str], widths: Sequence[int], hidden: int = HIDDEN) -> None:
        super().__init__()
        self.names = tuple(names)
        self.widths = tuple(int(w) for w in widths)
        # training ranges (raw units); NaN until set_ranges (a run's data) or a checkpoint
        self.register_buffer("low", torch.full((len(names),), math.nan, dtype=torch.float64))
        self.register_buffer("high", torch.full((len(names),), math.nan, dtype=torch.float64))
        self.mlp = nn.Sequential(
            nn.Linear(len(names), hidden), nn.SiLU(), nn.Linear(hidden, 2 * sum(self.widths))
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def set_ranges(self, ranges: Mapping[str, Sequence[float]]) -> None:
        """Record the training ranges ``{name: (min, max)}`` (raw units) of every parameter."""
        missing = [n for n in self.names if n not in ranges]
        if missing:
            raise ConfigError(
                f"model.parameters: no training range for {missing} (ranges given for "
                f"{sorted(ranges)})"
            )
        low, high = (
            torch.tensor([float(ranges[n][i]) for n in self.names], dtype=torch.float64)
            for i in (0, 1)
        )
        bad = [n for n, lo, hi in zip(self.names, low, high, strict=True) if not lo < hi]
        if bad:
            raise ConfigError(f"model.parameters: training range of {bad} is empty (min >= max)")
        self.low.copy_(low)
        self.high.copy_(high)

    @property
    def has_ranges(self) -> bool:
        """Whether the training ranges are set."""
        return not bool(torch.isnan(self.low).any())

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """The training ranges ``{name: (min, max)}``, raw units (NaN before they are set)."""
        return {
            n: (lo, hi)
            for n, lo, hi in zip(self.names, self.low.tolist(), self.high.tolist(), strict=True)
        }

    def normalise(self, params: torch.Tensor) -> torch.Tensor:
        """``params`` ``(B, P)`` (raw units, columns as ``names``) mapped to [-1, 1] over the
        training ranges."""
        if params.ndim != 2 or params.shape[1] != len(self.names):
            raise ValueError(
                f"FiLM: expected parameters (B, {len(self.names)}) for {list(self.names)}, "
                f"got {tuple(params.shape)}"
            )
        if not self.has_ranges:
            raise ValueError("FiLM: training ranges not set (set_ranges, or load a checkpoint)")
        low, high = self.low.to(params.device), self.high.to(params.device)
        return (2 * (params.double() - low) / (high - low) - 1).float()

    def forward(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, ``(scale, shift)``, each ``(B, C, 1, 1, 1)``: ``1 + gamma`` and ``beta``."""
        out = self.mlp(self.normalise(params))
        styles = []
        for chunk in out.split([2 * w for w in self.widths], dim=1):
            gamma, beta = chunk[:, :, None, None, None].chunk(2, dim=1)
            styles.append((1 + gamma, beta))
        return styles


def build_film(
    conditioning: str, parameters: Sequence[str] | None, widths: Sequence[int]
) -> FiLM | None:
    """The FiLM a network with blocks of ``widths`` channels gets, or ``None`` for
    ``conditioning='none'``."""
    conditioning, names = check_conditioning(conditioning, parameters)
    return FiLM(names, widths) if conditioning == "film" else None


def block_styles(film: FiLM | None, params: torch.Tensor | None, net: str) -> Iterator[Style]:
    """The styles of a network's blocks in order (``None`` each, for an unconditioned one);
    a :class:`ConfigError` when a conditioned network gets no parameters, or the reverse."""
    if film is None:
        if params is not None:
            raise ConfigError(
                f"{net}: got universe parameters but model.conditioning=none (set "
                "model.conditioning=film to train across universes)"
            )
        return itertools.repeat(None)
    if params is None:
        raise ConfigError(
            f"{net}: conditioned on {list(film.names)} (model.conditioning=film) but got no "
            "parameters (a batch without 'params', or no parameters given to predict)"
        )
    return iter(film(params))


def modulate(x: torch.Tensor, style: Style) -> torch.Tensor:
    """``x * scale + shift`` per channel, or ``x`` for ``style`` ``None``."""
    if style is None:
        return x
    scale, shift = style
    return x * scale + shift
