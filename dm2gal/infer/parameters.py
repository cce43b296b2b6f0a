"""A conditioned network's universe parameters at prediction time: taken from the command line
(``params.Om0=0.3``) or the source store's metadata (``parameters``), checked against the
training ranges the network records, bound to the network so that whole-box prediction runs it
like any other, and recorded in the metadata of the store its prediction writes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from dm2gal.errors import ConfigError
from dm2gal.io.parameters import PARAMETERS_KEY, parameter_attrs, read_parameters
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.models.base import FieldNet
from dm2gal.models.mixture import OccupancyMixture


def universe_parameters(
    net: FieldNet,
    stored: Mapping[str, float],
    given: Mapping[str, Any] | None,
    allow_extrapolation: bool = False,
    where: str = "the source",
) -> dict[str, float]:
    """The values of the parameters ``net`` is conditioned on (in its order): each from
    ``given`` (the command line's ``params``) else ``stored`` (the source's metadata, read from
    ``where``). One :class:`ConfigError` for a value that is missing, not a number, named but
    not a parameter of the network, or outside the training range (unless
    ``allow_extrapolation``)."""
    given = dict(given or {})
    names = net.parameter_names
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(
            f"params: {unknown} are not parameters of the network (conditioned on {list(names)})"
        )
    ranges = net.film.ranges if net.film is not None else {}
    values = {}
    for name in names:
        if name not in given and name not in stored:
            raise ConfigError(
                f"params.{name}: the network is conditioned on {list(names)}; no value for "
                f"{name} on the command line or in {where}'s metadata ('{PARAMETERS_KEY}')"
            )
        value = given.get(name, stored.get(name))
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"params.{name}: expected a number, got {value!r}") from None
        low, high = ranges[name]
        if not math.isfinite(value) or not (allow_extrapolation or low <= value <= high):
            raise ConfigError(
                f"params.{name} = {value:g} is outside the training range [{low:g}, {high:g}] "
                "(allow_extrapolation=true predicts anyway)"
            )
        values[name] = value
    return values


class BoundNet(FieldNet):
    """A conditioned network fixed to one universe's parameters: it takes input crops only,
    like an unconditioned network, so whole-box prediction needs no change."""

    def __init__(self, net: FieldNet, values: Mapping[str, float]) -> None:
        super().__init__()
        self.net = net
        self.context, self.fixed_output = net.context, net.fixed_output
        self.in_channels, self.period = net.in_channels, net.period
        self.values = dict(values)
        row = [float(values[n]) for n in net.parameter_names]
        self.register_buffer("row", torch.tensor([row], dtype=torch.float64), persistent=False)

    def valid_output(self, size: int) -> bool:
        return self.net.valid_output(size)

    def output_rule(self) -> str:
        return self.net.output_rule()

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.to(x.device).expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self._params(x))

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.infer(x, self._params(x))


class BoundDrawsNet(BoundNet):
    """A :class:`BoundNet` of a probabilistic network: also its seeded draws and the per-voxel
    laws of its raw output (what a draw copula is fitted to, :mod:`dm2gal.infer.copula_fit`)."""

    def infer_draws(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.net.infer_draws(x, noise, self._params(x))

    def distribution(self, output: torch.Tensor) -> OccupancyMixture:
        """The per-voxel laws of ``output``, a raw output of :meth:`forward` (which took the
        bound parameters)."""
        return self.net.distribution(output)


def bind_parameters(
    net: FieldNet,
    store: FieldStore | None,
    given: Mapping[str, Any] | None,
    allow_extrapolation: bool = False,
) -> FieldNet:
    """``net`` as prediction runs it on ``store``'s universe: a conditioned network bound to
    the parameters of :func:`universe_parameters` (from ``given``, else ``store``'s metadata);
    an unconditioned one unchanged (``given`` parameters then raise a :class:`ConfigError`).
    ``None`` values in ``given`` count as not given."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if not net.parameter_names:
        if given:
            raise ConfigError(
                f"params: {sorted(given)} given, but the network is not conditioned on universe "
                "parameters (model.conditioning=none)"
            )
        return net
    where = str(store.meta_path) if store is not None else "the source"
    stored = read_parameters(store) if store is not None else {}
    values = universe_parameters(net, stored, given, allow_extrapolation, where)
    bound = BoundDrawsNet if hasattr(net, "infer_draws") else BoundNet
    return bound(net, values)


def bound_values(net: FieldNet) -> dict[str, float]:
    """The universe parameters ``net`` is bound to (a :class:`BoundNet`); ``{}`` for any other
    network."""
    return dict(net.values) if isinstance(net, BoundNet) else {}


def record_parameters(store: FieldStore, net: FieldNet) -> None:
    """Record the universe parameters ``net`` is bound to in ``store``'s metadata, as a source
    store records its own (:mod:`dm2gal.io.parameters`; other parameters the store records are
    kept); nothing for an unbound network. A :class:`StoreError` naming the store when it
    records another value of one of them: its fields are of another universe."""
    values = bound_values(net)
    if not values:
        return
    recorded = read_parameters(store)
    clash = {n: recorded[n] for n in values if n in recorded and recorded[n] != values[n]}
    if clash:
        asked = {n: values[n] for n in clash}
        raise StoreError(
            f"{store.meta_path}: its fields are of the universe with {clash} "
            f"(attrs.{PARAMETERS_KEY}), the prediction is of {asked}; write it to another "
            "store (out=...)"
        )
    store.update_attrs(**parameter_attrs({**recorded, **values}))
