"""FieldDataModule: the Lightning data module every model trains with, on any field store."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from dm2gal.data.crops import ConcatCrops, FieldCrops, crop_stat, lattice
from dm2gal.data.regions import Region
from dm2gal.data.sampler import AugmentationSeeds, UniformSampler
from dm2gal.data.splits import Splits, make_splits
from dm2gal.data.symmetry import symmetry_group
from dm2gal.data.transforms import FieldTransform, fit_transform
from dm2gal.errors import ConfigError, integer_option
from dm2gal.io.parameters import read_parameters
from dm2gal.io.store import FieldStore

TRANSFORM_KEYS = {"log", "standardize"}


def check_input_room(crop: int, context: int, grid: int, grid_name: str) -> None:
    """Raise naming ``data.crop`` unless one input crop, ``crop`` plus twice the network's
    ``context`` (voxels), fits in a grid of ``grid`` voxels per side (``grid_name`` in the
    message): the one crop-versus-grid rule, checked from the config before any data exists and
    again on every store."""
    if crop + 2 * context > grid:
        raise ConfigError(
            f"config key 'data.crop' = {crop} plus twice the network's context ({context} voxels "
            f"per side) needs inputs of {crop + 2 * context} voxels, more than {grid_name}: lower "
            "data.crop, raise the grid or choose a model with less context"
        )


def _joined(parts: Sequence[FieldCrops]) -> FieldCrops | ConcatCrops:
    """One dataset of ``parts``: the one part itself, else their concatenation."""
    return parts[0] if len(parts) == 1 else ConcatCrops(parts)


def _flat_true(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the True entries of a 3D mask, in the smallest unsigned dtype that holds
    them, built row by row (no int64 copy of a large anchor lattice)."""
    out = np.empty(int(np.count_nonzero(mask)), dtype=np.min_scalar_type(mask.size))
    k, plane = 0, mask[0].size
    for i, row in enumerate(mask):
        idx = np.flatnonzero(row)
        out[k : k + len(idx)] = idx + i * plane
        k += len(idx)
    return out


class FieldDataModule(L.LightningDataModule):
    """Periodic crops of a field store, split into train / val / test with a guard band.

    Batches are dicts: ``input`` float32 ``(B, C, n + 2c, ...)`` and ``target`` float32
    ``(B, 1, n, n, n)`` normalised, ``occupied`` bool (raw target > 0) and ``valid`` bool (target
    voxels to score: inside the val / test region, and above ``min_target_mass`` if set); when
    the stores record parameters (:mod:`dm2gal.io.parameters`), ``params`` float32 ``(B, P)``:
    each crop's universe's values in raw units, ordered as :attr:`parameter_names`, whose
    training ranges :attr:`parameter_ranges` holds (min / max over the boxes trained on).

    A source with several universes (``stores()``, e.g. :class:`dm2gal.sim.hypercube.Hypercube`)
    trains on the training regions of all of them in one run, with the same held-out regions
    in each: normalisation statistics pooled over their training regions, one anchor list (so a
    mass-bin sampler bins and weighs crops of every universe alike), validation and test tiles of
    every universe's held-out regions. :attr:`store` is the first universe's.

    Args:
        source: an object whose ``build()`` returns a :class:`FieldStore` (idempotent, cheap
            once built) or whose ``stores()`` returns several (one per universe), a
            FieldStore, or a store directory.
        inputs, target: field names in the store.
        crop: target crop side ``n`` (voxels).
        context: input padding per side (voxels), normally the network's ``context``.
        splits: keyword arguments of :func:`make_splits` (default: the paper preset).
        transform: ``{log: bool, standardize: bool}`` (both true by default).
        sampler: a partial of a sampler class (``_partial_: true``), called with
            ``num_anchors, stat, seed, num_replicas, rank``; None: a uniform permutation.
        augment: "all48", "rotations24" or "none".
        random_shift: move each training anchor by a random offset below the stride.
        stride: spacing of the training anchor lattice (voxels); None: ``max(1, crop // 2)``.
        sample_on: the field whose crop totals a mass-bin sampler bins: None, the target; an
            input (e.g. ``subhalo``) selects crops on what the network sees, so the target's
            distribution given the inputs stays unbiased (a likelihood needs that).
        min_target_mass: train and score only target voxels above this (Msun/h; paper: 1e8).
        training_universes: further whole boxes of the source to train on as well (seeds
            ``training_seed + i``; the source must offer ``realisation(seed)``, as the mock does):
            more volume, and more of the rare massive halos, at the same cost per step.
        training_seed: the first of those seeds (keep them apart from the evaluation's).
        training_stores: further field stores (directories) trained on whole, with the same
            fields and voxel size. Held-out regions, normalisation and validation stay the
            source box's; HOD benchmarks are fitted on the same training volume.
        batch_size, num_workers, pin_memory, persistent_workers: DataLoader settings.
        seed: seeds the sampler, the augmentation and the loader workers.
        normalize_on_device: loaders yield raw Msun/h crops and the normalisation runs in
            ``on_after_batch_transfer`` (on the GPU), so the model still sees normalised batches
            while CPU workers skip the log; off by default (loaders yield normalised batches).
    """

    def __init__(
        self,
        source: Any,
        inputs: Sequence[str] = ("dm", "subhalo"),
        target: str = "stellar",
        crop: int = 16,
        context: int = 0,
        splits: Mapping[str, Any] | None = None,
        transform: Mapping[str, Any] | None = None,
        sampler: Callable[..., UniformSampler] | None = None,
        augment: str = "all48",
        random_shift: bool = False,
        stride: int | None = None,
        sample_on: str | None = None,
        min_target_mass: float | None = None,
        training_universes: int = 0,
        training_seed: int = 2000,
        training_stores: Sequence[str | Path] = (),
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
        normalize_on_device: bool = False,
    ):
        super().__init__()
        self.normalize_on_device = bool(normalize_on_device)
        self.source = source
        self.inputs, self.target = list(inputs), str(target)
        if not self.inputs:
            raise ConfigError("data.inputs: expected at least one input field name")
        self.crop = integer_option(crop, "data.crop", 1)
        self.context = integer_option(context, "data.context", 0)
        self.splits_config = dict(splits or {})
        self.transform_config = dict(transform or {})
        unknown = set(self.transform_config) - TRANSFORM_KEYS
        if unknown:
            raise ConfigError(
                f"data.transform: unknown keys {sorted(unknown)}, expected {TRANSFORM_KEYS}"
            )
        self.sampler = sampler
        self.symmetries = symmetry_group(augment)
        self.random_shift = bool(random_shift)
        self.stride = None if stride is None else integer_option(stride, "data.stride", 1)
        if sample_on is not None and sample_on not in self.inputs:
            raise ConfigError(
                f"data.sample_on: expected null (the target) or one of the inputs "
                f"{self.inputs}, got {sample_on!r}"
            )
        self.sample_on = sample_on
        if min_target_mass is not None and not min_target_mass >= 0:
            raise ConfigError(
                f"data.min_target_mass: expected >= 0 Msun/h or null, got {min_target_mass}"
            )
        self.min_target_mass = min_target_mass
        self.training_universes = integer_option(training_universes, "data.training_universes", 0)
        self.training_seed = integer_option(training_seed, "data.training_seed", 0)
        self.training_stores = [Path(p) for p in training_stores]
        if self.training_universes and not hasattr(source, "realisation"):
            raise ConfigError(
                f"data.training_universes: the data source ({type(source).__name__}) cannot "
                "generate other universes; give field stores with data.training_stores=[...]"
            )
        self.batch_size = integer_option(batch_size, "data.batch_size", 1)
        self.num_workers = integer_option(num_workers, "data.num_workers", 0)
        self.pin_memory, self.persistent_workers = bool(pin_memory), bool(persistent_workers)
        self.seed = int(seed)
        self.store: FieldStore | None = None
        self.universes: list[FieldStore] = []  # the source's boxes with held-out regions
        self.parameter_names: list[str] = []
        # min / max over the universes and further boxes trained on
        self.parameter_ranges: dict[str, tuple[float, float]] = {}
        self.splits: Splits | None = None
        self.transform: FieldTransform | None = None
        self.stat: np.ndarray | None = None
        self.trained_voxel_size: float | None = None  # Mpc/h, from a checkpoint
        self.training_boxes: list[FieldStore] = []  # further whole boxes trained on
        self._datasets: dict[str, FieldCrops | ConcatCrops] = {}

    # -- building -----------------------------------------------------------------------------
    def _build(self) -> list[FieldStore]:
        """The source's universes (built or read from their caches): several for a source with
        ``stores()``, else its one store."""
        if isinstance(self.source, FieldStore):
            return [self.source]
        if isinstance(self.source, str | Path):
            return [FieldStore(self.source)]
        if hasattr(self.source, "stores"):
            return list(self.source.stores())
        return [self.source.build()]

    def _extra_boxes(self) -> list[FieldStore]:
        """The further training boxes: ``training_universes`` realisations of the source (built
        or loaded from its cache), then ``training_stores``."""
        seeds = range(self.training_seed, self.training_seed + self.training_universes)
        boxes = [self.source.realisation(seed).build() for seed in seeds]
        return boxes + [FieldStore(path) for path in self.training_stores]

    def prepare_data(self) -> None:
        """Build the source's store and the further training boxes (Lightning calls this on
        rank 0 only)."""
        self._build()
        self._extra_boxes()

    def _check_box(self, store: FieldStore, voxel: float) -> None:
        """A further training box must hold the fields, at the source's voxel size."""
        for name in [*self.inputs, self.target]:
            store.field_meta(name)
        store.check_voxel_size(voxel, "data.training_stores / training_universes need the source's")
        check_input_room(
            self.crop, self.context, store.grid, f"the training box {store.root} ({store.grid}^3)"
        )

    def _check_universe(self, store: FieldStore, first: FieldStore) -> None:
        """A further universe of the source must hold the fields on the first one's grid (they
        share the held-out regions)."""
        for name in [*self.inputs, self.target]:
            store.field_meta(name)
        if (store.grid, store.box) != (first.grid, first.box):
            raise ConfigError(
                f"data.source: universe {store.root} is a {store.grid}^3 grid of {store.box} "
                f"Mpc/h, the first ({first.root}) {first.grid}^3 of {first.box} Mpc/h: every "
                "universe of a source needs the same box and grid"
            )

    def _set_parameters(self) -> None:
        """:attr:`parameter_names` and :attr:`parameter_ranges` from the stores trained on,
        which must all record the same parameters (or none)."""
        boxes = [*self.universes, *self.training_boxes]
        values = [read_parameters(box) for box in boxes]
        names = list(values[0])
        for box, params in zip(boxes, values, strict=True):
            if list(params) != names:
                raise ConfigError(
                    f"data: {box.meta_path} records the parameters {list(params)}, "
                    f"{boxes[0].meta_path} {names}: every box trained on needs the same ones"
                )
        self.parameter_names = names
        self.parameter_ranges = {
            name: (min(p[name] for p in values), max(p[name] for p in values)) for name in names
        }

    def parameter_vector(self, store: FieldStore) -> np.ndarray | None:
        """``store``'s parameters as float32 ``(P,)`` in :attr:`parameter_names`' order (None
        without parameters); raises naming the file when it records other parameters."""
        params = read_parameters(store)
        if list(params) != self.parameter_names:
            raise ConfigError(
                f"{store.meta_path}: records the parameters {list(params)}, the data module "
                f"trains on {self.parameter_names}"
            )
        return np.array(list(params.values()), dtype=np.float32) if params else None

    @property
    def box(self) -> float:
        return self.store.box

    @property
    def grid(self) -> int:
        return self.store.grid

    def setup(self, stage: str | None = None) -> None:
        """Open the store memory-mapped, build the splits, anchors and normalisation."""
        if self.store is not None:
            return
        universes = self._build()
        store = universes[0]
        grid = store.grid
        for universe in universes:
            self._check_universe(universe, store)
        self.check_room(grid, f"the store {store.root} ({grid}^3)")
        self.splits = make_splits(grid, **{"context": self.context, **self.splits_config})
        names = [*self.inputs, self.target]
        fields = [[universe.read(name) for name in names] for universe in universes]
        if self.transform is None:  # else restored from a checkpoint (load_state_dict)
            channels = [[box[c] for box in fields] for c in range(len(names))]
            self.transform = fit_transform(
                channels[:-1], channels[-1], self.splits, **self.transform_config
            )
        self.store, self.universes = store, universes
        self.training_boxes = self._extra_boxes()
        for box in self.training_boxes:
            self._check_box(box, store.box / grid)
        self._set_parameters()
        self._datasets = {"train": self._train_dataset(fields)}
        for split in ("val", "test"):
            region = getattr(self.splits, split)
            self._datasets[split] = _joined([self._tiles(u, region) for u in universes])

    def check_room(self, grid: int, grid_name: str) -> None:
        """Raise naming the keys unless inputs fit in a ``grid^3`` box (``grid_name`` describes
        it in the message) and some training crop on the stride lattice stays clear of the held-out
        regions and their guard band: needs the grid only, so it runs before data exists."""
        check_input_room(self.crop, self.context, grid, grid_name)
        splits = make_splits(grid, **{"context": self.context, **self.splits_config})
        starts = [a - self.context for a in self._axes(grid)]
        if not splits.lattice_has_room(starts, self.crop + 2 * self.context):
            raise ConfigError(
                f"config key 'data.crop' = {self.crop} with the network's context "
                f"({self.context} voxels per side): no {self.crop + 2 * self.context}^3 training "
                f"input on a {grid}^3 grid stays clear of the held-out cubes widened by the guard "
                f"band ({splits.guard} voxels): raise the grid or choose a model with less context"
            )

    def _axes(self, grid: int) -> list[np.ndarray]:
        """The training anchor lattice's axes: crop starts every ``stride`` voxels."""
        return [lattice(grid, self.stride or max(1, self.crop // 2))] * 3

    def _lattice(self, grid: int, splits: Splits | None) -> tuple[list[np.ndarray], np.ndarray]:
        """The training anchor lattice's axes and which anchors keep their input clear of
        ``splits``' held-out regions (all of them for None)."""
        axes = self._axes(grid)
        if splits is None:
            return axes, np.ones(tuple(len(a) for a in axes), dtype=bool)
        c = self.context
        return axes, splits.lattice_allowed([a - c for a in axes], self.crop + 2 * c)

    def _train_dataset(self, fields: Sequence[Sequence[np.ndarray]]) -> FieldCrops | ConcatCrops:
        """Training crops of the training region of each of the source's universes (``fields``:
        each one's inputs and target), and of every further training box whole; sets
        :attr:`stat` (the mass-bin sampler's crop statistic, per anchor, over all of them)."""
        parts = [
            self._box_crops(universe, box, self.splits)
            for universe, box in zip(self.universes, fields, strict=True)
        ]
        for box in self.training_boxes:
            parts.append(self._box_crops(box, [box.read(n) for n in [*self.inputs, self.target]]))
        stats = [stat for _, stat in parts]
        self.stat = None if stats[0] is None else np.concatenate(stats)
        return _joined([c for c, _ in parts])

    def _box_crops(
        self, store: FieldStore, fields: Sequence[np.ndarray], splits: Splits | None = None
    ) -> tuple[FieldCrops, np.ndarray | None]:
        """One box's training crops on the stride lattice, outside ``splits``' held-out regions
        (None: all of the box), and their crop statistic for a mass-bin sampler (or None). The
        sampler bins the crop totals of the input ``data.sample_on`` names, else of the target."""
        c, n = self.context, self.crop
        target = fields[-1]
        sampled = fields[self.inputs.index(self.sample_on)] if self.sample_on else None
        stride = self.stride or max(1, n // 2)
        axes, allowed = self._lattice(store.grid, splits)
        binned = getattr(self.sampler_class, "needs_stat", False)
        target_stat = None
        if self.min_target_mass is not None or (binned and sampled is None):
            target_stat = crop_stat(target, axes, n)
        if self.min_target_mass is not None:
            allowed &= target_stat > math.log10(1.0 + self.min_target_mass)
        stat = None
        if binned:
            stat = target_stat if sampled is None else crop_stat(sampled, axes, n)
        anchors = _flat_true(allowed)
        if len(anchors) == 0:
            raise ConfigError(
                f"data: no training anchors left in {store.root}: every {n + 2 * c}^3 input "
                f"(data.crop={n}, context={c}) on the stride-{stride} lattice touches the held-out "
                f"regions widened by data.splits.guard={self.splits.guard}"
                + ("" if self.min_target_mass is None else " or has M* <= data.min_target_mass")
            )
        crops = FieldCrops(
            [store.path(name) for name in [*self.inputs, self.target]],
            n,
            c,
            axes,
            anchors,
            self._crop_transform,
            self.symmetries,
            min_target_mass=self.min_target_mass,
            shift=stride if self.random_shift else 0,
            splits=splits,
            seed=self.seed,
            params=self.parameter_vector(store),
        )
        return crops, None if stat is None else stat.reshape(-1)[anchors]

    def _tiles(self, store: FieldStore, region: Region) -> FieldCrops:
        """Tiles of ``region`` of ``store`` (validation / test), in order."""
        n = self.crop
        axes = [
            (region.start[ax] + np.arange(0, region.size[ax], n)) % region.grid for ax in range(3)
        ]
        return FieldCrops(
            [store.path(name) for name in [*self.inputs, self.target]],
            n,
            self.context,
            axes,
            None,
            self._crop_transform,
            None,
            region=region,
            min_target_mass=self.min_target_mass,
            params=self.parameter_vector(store),
        )

    @property
    def _crop_transform(self) -> FieldTransform | None:
        return None if self.normalize_on_device else self.transform

    @property
    def sampler_class(self) -> type | None:
        return getattr(self.sampler, "func", self.sampler)

    # -- loaders ------------------------------------------------------------------------------
    def _world(self) -> tuple[int | None, int | None]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None, None
        return trainer.world_size, trainer.global_rank

    def make_sampler(self) -> UniformSampler:
        """The training sampler for this rank (the configured partial, or uniform)."""
        num_replicas, rank = self._world()
        kwargs = {
            "num_anchors": len(self._datasets["train"]),
            "seed": self.seed,
            "num_replicas": num_replicas,
            "rank": rank,
        }
        if self.sampler is None:
            return UniformSampler(**kwargs)
        return self.sampler(stat=self.stat, **kwargs)

    def _loader(self, split: str, **kwargs: Any) -> DataLoader:
        if split not in self._datasets:
            raise RuntimeError("FieldDataModule: call setup() before asking for a dataloader")
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = AugmentationSeeds(self.make_sampler())
        return self._loader("train", sampler=sampler, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalise raw batches on the device when ``normalize_on_device`` is set."""
        if self.normalize_on_device:
            batch = {
                **batch,
                "input": self.transform.forward_input(batch["input"]),
                "target": self.transform.forward_target(batch["target"]),
            }
        return batch

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Normalisation statistics and the voxel side in Mpc/h (Lightning stores them in
        checkpoints)."""
        state = {"transform": self.transform.state_dict()} if self.transform is not None else {}
        if self.store is not None:
            state["voxel_size"] = self.box / self.grid
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore normalisation statistics (and the trained voxel side), before or after
        :meth:`setup`."""
        self.trained_voxel_size = state_dict.get("voxel_size")
        if "transform" not in state_dict:
            return
        if self.transform is None:
            self.transform = FieldTransform(**state_dict["transform"])
        else:  # in place: the datasets hold this transform
            self.transform.load_state_dict(state_dict["transform"])
