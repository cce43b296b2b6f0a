"""A Latin hypercube of mock universes over cosmology and galaxy-model parameters.

Like CAMELS' LH set: ``n_universes`` points of a seeded Latin hypercube (scipy's
:class:`~scipy.stats.qmc.LatinHypercube`: one point in each of ``n`` equal strata of every
dimension) over ranges of :class:`~dm2gal.sim.cosmology.Cosmology` and
:class:`~dm2gal.sim.galaxies.GalaxyModel` keys, each universe a :class:`MockUniverse` with its
own initial-condition seed (or one seed for all), cached by its configuration and built in
parallel processes. Beside the training universes it offers the universes an evaluation needs:
``test_points`` (a second hypercube, never trained on, inside the inner ``shrink`` fraction of
each range) and ``response`` pairs (the centre of the ranges with one parameter at
``centre +- delta``, the same seed for both). Every store records its parameters
(:mod:`dm2gal.io.parameters`).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import qmc
from tqdm.auto import tqdm

from dm2gal.errors import ConfigError, integer_option
from dm2gal.io.store import FieldStore
from dm2gal.sim.cosmology import Cosmology
from dm2gal.sim.galaxies import GalaxyModel
from dm2gal.sim.mock import MockUniverse

log = logging.getLogger(__name__)

COSMOLOGY_KEYS = tuple(f.name for f in fields(Cosmology))
GALAXY_KEYS = tuple(f.name for f in fields(GalaxyModel))
#: the keys of the test_points and response options
TEST_KEYS = ("count", "seed", "ic_seed", "shrink")
#: what a run trains on: every hypercube point, or the centre universe alone (a baseline)
TRAINING = ("hypercube", "centre")
RESPONSE_KEYS = ("deltas", "seeds")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ConfigError(f"data.source.{key}: expected a finite number, got {value!r}")
    return float(value)


def _ranges(ranges: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    """``ranges`` checked: known distinct keys, each ``[low, high]`` with ``low < high``."""
    if not ranges:
        raise ConfigError("data.source.ranges: expected at least one parameter: [low, high]")
    out = {}
    for name, bounds in ranges.items():
        if name not in COSMOLOGY_KEYS + GALAXY_KEYS:
            raise ConfigError(
                f"data.source.ranges.{name}: not a cosmology key {COSMOLOGY_KEYS} or a galaxy-"
                f"model key {GALAXY_KEYS}"
            )
        if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) != 2:
            raise ConfigError(f"data.source.ranges.{name}: expected [low, high], got {bounds!r}")
        low, high = (_number(b, f"ranges.{name}") for b in bounds)
        if not low < high:
            raise ConfigError(f"data.source.ranges.{name}: expected low < high, got {bounds!r}")
        out[name] = (low, high)
    return out


def _options(given: Mapping[str, Any] | None, keys: Sequence[str], key: str) -> dict[str, Any]:
    unknown = set(given or {}) - set(keys)
    if unknown:
        raise ConfigError(f"data.source.{key}: unknown keys {sorted(unknown)}, expected {keys}")
    return dict(given or {})


def latin_hypercube(n: int, dimensions: int, seed: int) -> np.ndarray:
    """``(n, dimensions)`` points in ``[0, 1)``: one in each of the ``n`` strata of every
    dimension, placed at random inside it (scipy's scrambled Latin hypercube)."""
    return qmc.LatinHypercube(dimensions, rng=np.random.default_rng(seed)).random(n)


@dataclass(frozen=True)
class BuildTime:
    """What building one universe took: ``wall`` and ``cpu`` seconds (all its threads)."""

    wall: float
    cpu: float


def build_timed(universe: MockUniverse) -> BuildTime:
    """Build ``universe`` (here, or in a worker process); what it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    universe.build()
    return BuildTime(time.perf_counter() - wall, time.process_time() - cpu)


def build_universes(
    universes: Sequence[MockUniverse], workers: int | None = None, progress: bool = True
) -> dict[Path, BuildTime]:
    """Build those of ``universes`` not cached, ``workers`` at a time in fresh processes (None:
    one per core; 1: here, one after another), with a progress bar; the build time of each
    built, by store directory (empty when every one was cached)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = (cores or 1) if workers is None else integer_option(workers, "data.source.workers", 1)
    todo = list({u.store_dir: u for u in universes if u.cache_problem() is not None}.values())
    if todo:
        log.info(
            "building %d of %d mock universes, %d at a time",
            len(todo),
            len(universes),
            min(workers, len(todo)),
        )
    times = {}
    with tqdm(total=len(todo), desc="universes", unit="box", disable=not progress) as bar:
        if workers == 1 or len(todo) <= 1:
            for universe in todo:
                times[universe.store_dir] = build_timed(universe)
                bar.update()
        else:
            # spawn: a forked child would inherit the parent's torch / OpenMP thread state
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                jobs = {pool.submit(build_timed, u): u.store_dir for u in todo}
                for done in as_completed(jobs):
                    times[jobs[done]] = done.result()
                    bar.update()
    for root, took in times.items():
        log.info("mock universe %s built in %.1f s (%.1f s CPU)", root.name, took.wall, took.cpu)
    return times


class Hypercube:
    """``n_universes`` mock universes on a seeded Latin hypercube of parameter ``ranges``.

    Args:
        ranges: parameter name -> ``[low, high]``, keys of :class:`Cosmology` (e.g. ``Om0``,
            ``sigma8``) or :class:`GalaxyModel` (e.g. ``norm``, ``log_m1``, ``scatter_dex``,
            ``env_dex``); their order is the order of every parameter vector.
        universe: :class:`MockUniverse` arguments every universe shares (``box`` Mpc/h,
            ``particles``, ``grid``, ``steps``, ``cache_dir``, ...).
        n_universes: training universes (points of the hypercube), at least 3.
        seed: seeds the training hypercube.
        ic_seed: initial-condition seed of universe 0; universe ``i`` has ``ic_seed + i``.
        same_seed: every universe (training, test, response) has the initial conditions of
            ``ic_seed``: differences are the parameters' alone.
        cosmology, galaxies: values of the keys not in ``ranges`` (default: the dataclasses').
        test_points: ``count`` universes of a second hypercube (``seed``) inside the inner
            ``shrink`` fraction of each range, initial-condition seeds ``ic_seed + i``;
            ``shrink <= 1 - 2 / n_universes`` keeps them inside the training points' span.
        response: ``deltas`` (name -> delta, in the parameter's units) and ``seeds``: for each
            name the centre of the ranges at ``centre - delta`` and ``centre + delta`` with one
            seed; ``delta <= (1/2 - 1/n_universes)`` of the range keeps both inside the span.
        workers: universes built at once, each in its own process (None: one per core).
        progress: a progress bar over the universes built.
        training: ``"hypercube"`` trains on every point; ``"centre"`` on the universe at the
            centre of the ranges alone (initial conditions of ``ic_seed``): the single-universe
            baseline, scored on the same test and response universes.
    """

    def __init__(
        self,
        ranges: Mapping[str, Sequence[float]],
        universe: Mapping[str, Any],
        n_universes: int = 16,
        seed: int = 0,
        ic_seed: int = 100,
        same_seed: bool = False,
        cosmology: Mapping[str, float] | None = None,
        galaxies: Mapping[str, float] | None = None,
        test_points: Mapping[str, Any] | None = None,
        response: Mapping[str, Any] | None = None,
        workers: int | None = None,
        progress: bool = True,
        training: str = "hypercube",
    ):
        self.ranges = _ranges(ranges)
        if training not in TRAINING:
            raise ConfigError(f"data.source.training: expected one of {TRAINING}, got {training!r}")
        self.training = training
        self.universe_options = dict(universe)
        for key in ("seed", "cosmology", "galaxies", "parameter_names"):
            if key in self.universe_options:
                raise ConfigError(
                    f"data.source.universe.{key}: set by the hypercube (seed: ic_seed; "
                    "cosmology / galaxies: the hypercube's own keys)"
                )
        # 3 at least: test points and response pairs need room inside the training points' span
        self.n_universes = integer_option(n_universes, "data.source.n_universes", 3)
        self.seed = integer_option(seed, "data.source.seed", 0)
        self.ic_seed = integer_option(ic_seed, "data.source.ic_seed", 0)
        if not isinstance(same_seed, bool):
            raise ConfigError(f"data.source.same_seed: expected true or false, got {same_seed!r}")
        self.same_seed = same_seed
        self.cosmology, self.galaxies = dict(cosmology or {}), dict(galaxies or {})
        self.test = {"count": 4, "seed": self.seed + 1, "ic_seed": 5000, "shrink": 0.8}
        self.test |= _options(test_points, TEST_KEYS, "test_points")
        self.response = {"deltas": {}, "seeds": [6000]}
        self.response |= _options(response, RESPONSE_KEYS, "response")
        if workers is not None:
            workers = integer_option(workers, "data.source.workers", 1)
        self.workers = workers
        self.progress = bool(progress)
        self._check_test_points()
        self._check_response()
        # every universe built once here: a bad parameter fails now, naming its key
        self.training_universes()
        self.test_universes()
        for seed in self.response["seeds"]:
            self.response_universes(seed)

    # -- the parameter space ------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The parameter names, in the order of every parameter vector."""
        return list(self.ranges)

    def _scaled(self, unit: np.ndarray, shrink: float = 1.0) -> np.ndarray:
        """Points of the unit cube mapped onto the inner ``shrink`` fraction of the ranges."""
        low, high = np.array(list(self.ranges.values())).T
        return qmc.scale(unit * shrink + (1 - shrink) / 2, low, high)

    @property
    def points(self) -> np.ndarray:
        """The training universes' parameters, ``(n_universes, len(names))``."""
        unit = latin_hypercube(self.n_universes, len(self.ranges), self.seed)
        return self._scaled(unit)

    @property
    def test_parameter_points(self) -> np.ndarray:
        """The test universes' parameters, ``(test_points.count, len(names))``."""
        unit = latin_hypercube(self.test["count"], len(self.ranges), self.test["seed"])
        return self._scaled(unit, self.test["shrink"])

    @property
    def centre(self) -> dict[str, float]:
        """The middle of every range."""
        return {name: (low + high) / 2 for name, (low, high) in self.ranges.items()}

    def _check_test_points(self) -> None:
        self.test["count"] = integer_option(self.test["count"], "data.source.test_points.count", 1)
        self.test["seed"] = integer_option(self.test["seed"], "data.source.test_points.seed", 0)
        self.test["ic_seed"] = integer_option(
            self.test["ic_seed"], "data.source.test_points.ic_seed", 0
        )
        shrink = _number(self.test["shrink"], "test_points.shrink")
        limit = 1 - 2 / self.n_universes
        if not 0 < shrink <= limit:
            raise ConfigError(
                f"data.source.test_points.shrink = {shrink}: expected 0 < shrink <= 1 - 2 / "
                f"n_universes = {limit:.3g}, so test points stay inside the training points' span"
            )
        self.test["shrink"] = shrink

    def _check_response(self) -> None:
        deltas = self.response["deltas"]
        if not isinstance(deltas, Mapping):
            raise ConfigError(f"data.source.response.deltas: expected name: delta, got {deltas!r}")
        for name, delta in deltas.items():
            if name not in self.ranges:
                raise ConfigError(
                    f"data.source.response.deltas.{name}: not a hypercube parameter {self.names}"
                )
            delta = _number(delta, f"response.deltas.{name}")
            low, high = self.ranges[name]
            limit = (0.5 - 1 / self.n_universes) * (high - low)
            if not 0 < delta <= limit:
                raise ConfigError(
                    f"data.source.response.deltas.{name} = {delta}: expected 0 < delta <= "
                    f"(1/2 - 1/n_universes) of the range = {limit:.4g}, so both sides stay "
                    "inside the training points' span"
                )
        seeds = self.response["seeds"]
        if isinstance(seeds, str) or not isinstance(seeds, Sequence):
            raise ConfigError(f"data.source.response.seeds: expected a list, got {seeds!r}")
        for seed in seeds:
            integer_option(seed, "data.source.response.seeds", 0)

    def with_evaluation(
        self, test_count: int | None = None, response_seeds: Sequence[int] | None = None
    ) -> Hypercube:
        """This hypercube with ``test_count`` test points and response pairs on
        ``response_seeds`` (None: this one's): the same training universes, more (or fewer)
        unseen ones to score a trained network on."""
        other = copy.copy(self)
        other.test, other.response = dict(self.test), dict(self.response)
        if test_count is not None:
            other.test["count"] = test_count
        if response_seeds is not None:
            other.response["seeds"] = response_seeds
        other._check_test_points()
        other._check_response()
        return other

    # -- universes ----------------------------------------------------------------------------
    def universe(self, values: Mapping[str, float], seed: int) -> MockUniverse:
        """The mock universe at the parameters ``values`` (every hypercube name) with
        initial-condition seed ``seed`` (``ic_seed`` with ``same_seed``)."""
        missing = [name for name in self.names if name not in values]
        if missing:
            raise ConfigError(f"hypercube universe: no values for the parameters {missing}")
        values = {name: float(values[name]) for name in self.names}
        cosmology = self.cosmology | {k: v for k, v in values.items() if k in COSMOLOGY_KEYS}
        galaxies = self.galaxies | {k: v for k, v in values.items() if k in GALAXY_KEYS}
        return MockUniverse(
            **self.universe_options,
            seed=self.ic_seed if self.same_seed else seed,
            cosmology=cosmology,
            galaxies=galaxies,
            parameter_names=self.names,
        )

    def _at(self, points: np.ndarray, first_seed: int) -> list[MockUniverse]:
        return [
            self.universe(dict(zip(self.names, p, strict=True)), first_seed + i)
            for i, p in enumerate(points)
        ]

    def training_universes(self) -> list[MockUniverse]:
        """The universes to train on: one per hypercube point, or the centre universe alone."""
        if self.training == "centre":
            return [self.centre_universe(self.ic_seed)]
        return self._at(self.points, self.ic_seed)

    def test_universes(self) -> list[MockUniverse]:
        """The evaluation's unseen universes (never trained on)."""
        return self._at(self.test_parameter_points, self.test["ic_seed"])

    def response_universes(self, seed: int) -> dict[str, tuple[MockUniverse, MockUniverse]]:
        """Per ``response.deltas`` name: the universes at the centre with that parameter at
        ``centre - delta`` and ``centre + delta``, both with initial-condition seed ``seed``."""
        pairs = {}
        for name, delta in self.response["deltas"].items():
            low, high = (self.centre | {name: self.centre[name] + s * delta} for s in (-1, 1))
            pairs[name] = (self.universe(low, seed), self.universe(high, seed))
        return pairs

    def centre_universe(self, seed: int) -> MockUniverse:
        """The universe at the centre of the ranges (a single-universe baseline)."""
        return self.universe(self.centre, seed)

    # -- stores -------------------------------------------------------------------------------
    def build_all(self, universes: Sequence[MockUniverse]) -> list[FieldStore]:
        """The stores of ``universes``, built (in parallel) where not cached."""
        build_universes(universes, self.workers, self.progress)
        return [FieldStore(u.store_dir) for u in universes]

    def stores(self) -> list[FieldStore]:
        """The training universes' stores, in hypercube order (built where not cached)."""
        return self.build_all(self.training_universes())

    def build(self) -> FieldStore:
        """Build every training universe; the first one's store."""
        return self.stores()[0]
