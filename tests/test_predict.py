"""Tiled prediction: independent of the tile size, equal to one forward pass, periodic, clamped."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dm2gal.data.regions import Region
from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.infer.predict import (
    PredictOptions,
    check_tile,
    chunk_grid,
    predict_region,
    predict_store,
    read_block,
    tile_size,
    tiles_per_chunk,
)
from dm2gal.io.store import FieldStore, StoreError
from dm2gal.models import PaperNet, ResNet3d, UNet3d
from dm2gal.models.base import FieldNet

GRID = 24


@pytest.fixture(scope="module")
def fields() -> list[np.ndarray]:
    """Two positive input fields (Msun/h per voxel) on a 24^3 grid."""
    rng = np.random.default_rng(7)
    return [rng.lognormal(20.0, 1.0, (GRID,) * 3).astype(np.float32) for _ in range(2)]


def _net(net: FieldNet) -> FieldNet:
    torch.manual_seed(0)
    return net.eval()


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    return torch.log1p(raw) - 20.0


def _predict(net: FieldNet, fields, region: Region, tile: int, denorm=torch.exp, out=None, **kw):
    options = PredictOptions(tile=tile, progress=False, **kw)
    return predict_region(net, fields, region, _normalise, denorm, options, out)


def _padded(fields, region: Region, pad: int) -> torch.Tensor:
    """The region widened by ``pad`` voxels per side, gathered with periodic fancy indexing."""
    ix, iy, iz = (region.indices(ax, pad) for ax in range(3))
    return torch.from_numpy(np.stack([f[np.ix_(ix, iy, iz)] for f in fields]))


REGIONS = {
    "inside": Region((3, 5, 2), (10, 7, 9), GRID),
    "wrapping": Region((19, 22, 1), (9, 8, 11), GRID),
}


@pytest.mark.parametrize("where", REGIONS)
@pytest.mark.parametrize(
    ("levels", "convs", "tiles"),
    # (2, 1) has sides 2 mod 4 and (3, 2) sides 4 mod 8: no tile side is a multiple of the
    # period, so tiles overlap
    [(1, 1, (2, 6, 10)), (2, 2, (4, 12)), (2, 1, (6, 10, 14)), (3, 2, (12, 20))],
)
def test_unet_prediction_does_not_depend_on_the_tile_size(fields, where, levels, convs, tiles):
    net = _net(UNet3d(in_channels=2, channels=3, levels=levels, convs=convs))
    region = REGIONS[where]
    ref = _predict(net, fields, region, tiles[0], batch_size=3)
    assert ref.shape == region.size and (ref > 0).all()
    for tile in tiles[1:]:
        np.testing.assert_allclose(_predict(net, fields, region, tile), ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("where", REGIONS)
@pytest.mark.parametrize(
    "make",
    [lambda: ResNet3d(in_channels=2, channels=3, blocks=1), lambda: UNet3d(2, 1, 3, 1, 1)],
    ids=["resnet3d", "unet3d"],
)
def test_prediction_equals_one_forward_pass_clamped_at_zero(fields, where, make):
    """With a denormalisation that gives negative masses, predict_region clamps them to 0 (a
    mass per voxel is never negative) and returns the forward pass elsewhere."""
    net = _net(make())
    region = REGIONS[where]
    if not net.valid_output(region.size[0]):
        region = Region(region.start, (8, 8, 8), GRID)  # the UNet needs even cube sides
    x = _normalise(_padded(fields, region, net.context))
    if len(set(region.size)) == 1:
        with torch.no_grad():
            direct = net(x[None])[0, 0].numpy()
    else:  # ResNet3d takes cubes only: pass the bounding cube and cut it
        side = max(region.size)
        cube = Region(region.start, (side,) * 3, GRID)
        with torch.no_grad():
            full = net(_normalise(_padded(fields, cube, net.context))[None])
        direct = full[0, 0, : region.size[0], : region.size[1], : region.size[2]].numpy()
    offset = float(np.median(direct))  # half the voxels come out negative
    got = _predict(net, fields, region, tile=4, denorm=lambda y: y - offset, batch_size=2)
    want = direct - offset
    assert (want < 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, np.maximum(want, 0.0), rtol=1e-5, atol=1e-6)
    assert (got[want < 0] == 0).all()


def test_paper_net_many_centres_per_batch_equal_one_pass_per_voxel(fields):
    """The centre-voxel network (65^3 input, 1 output voxel) on a region crossing the box edge:
    a batch of 6 centres per forward pass gives each voxel's own forward pass."""
    net = _net(PaperNet(in_channels=2, channels=1))
    assert tile_size(net, 32) == 1
    region = Region((22, 0, 5), (3, 2, 2), GRID)
    got = _predict(net, fields, region, tile=32, batch_size=6)
    want = np.empty(region.size, dtype=np.float32)
    for i in range(3):
        for j in range(2):
            for k in range(2):
                voxel = Region((22 + i, j, 5 + k), (1, 1, 1), GRID)
                x = _normalise(_padded(fields, voxel, net.context))[None]
                with torch.no_grad():
                    want[i, j, k] = torch.exp(net(x))[0, 0, 0, 0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_tile_size_is_a_valid_output_of_at_least_the_period():
    net = UNet3d(2, 1, 2, levels=2, convs=1)  # valid sides 2, 6, 10, ...; period 4
    assert tile_size(net, 9) == 6
    with pytest.raises(ValueError, match="UNet3d"):
        tile_size(net, 3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNet3d(in_channels=2, channels=3, levels=2, convs=1),
        lambda: PaperNet(in_channels=2, channels=1),
    ],
    ids=["unet3d", "paper"],
)
def test_prediction_does_not_depend_on_the_chunking(fields, make):
    """Reading the store one tile at a time (many ragged chunks) or all at once gives the same
    field, on a region that wraps around the box."""
    net = _net(make())
    region = Region((19, 22, 1), (9, 5, 7) if net.fixed_output is None else (3, 2, 4), GRID)
    one = _predict(net, fields, region, tile=6, chunk_voxels=1)
    whole = _predict(net, fields, region, tile=6, chunk_voxels=1 << 30)
    np.testing.assert_allclose(one, whole, rtol=1e-5, atol=0)


def test_chunks_cover_every_tile_once():
    counts, per_chunk = (5, 1, 7), 3
    seen = np.zeros(counts, dtype=int)
    for first, tiles in chunk_grid(counts, per_chunk):
        assert all(1 <= n <= per_chunk for n in tiles)
        seen[tuple(slice(f, f + n) for f, n in zip(first, tiles, strict=True))] += 1
    assert (seen == 1).all()
    # a chunk of m tiles of step 8 and width 24 reads (m - 1) * 8 + 24 voxels per side
    assert tiles_per_chunk(8, 24, 40**3) == 3 and tiles_per_chunk(8, 24, 1) == 1


def test_block_read_in_slabs_by_threads_equals_one_read(fields):
    start, shape = (-3, 20, 5), (7, 30, 4)  # y wraps more than once
    idx = [np.arange(s, s + n) % GRID for s, n in zip(start, shape, strict=True)]
    want = np.stack([f[np.ix_(*idx)] for f in fields])
    with ThreadPoolExecutor(3) as pool:
        for slabs in (1, 3, 50):
            got = read_block(fields, start, shape, pool=pool, slabs=slabs)
            np.testing.assert_array_equal(got.numpy(), want)


def test_whole_box_prediction_into_a_store(fields, tmp_path):
    """predict_store writes the whole box through a memory map with its provenance; the field
    equals the in-memory prediction, and a store of another box is refused, nothing written."""
    source = FieldStore(tmp_path / "sim")
    source.init(30.0, GRID)
    source.write("dm", fields[0])
    source.write("subhalo", fields[1])
    transform = FieldTransform([20.0 / np.log(10), 20.0 / np.log(10)], [1.0, 1.0], 9.0, 0.5)
    net = _net(UNet3d(in_channels=2, channels=3, levels=1, convs=1))
    box = Region((0, 0, 0), (GRID,) * 3, GRID)
    want = predict_region(
        net,
        fields,
        box,
        transform.forward_input,
        transform.inverse_prediction,
        PredictOptions(tile=8, progress=False),
    )
    out = predict_store(
        net,
        transform,
        source,
        ["dm", "subhalo"],
        tmp_path / "out",
        "stellar",
        {"run_dir": "r"},
        options=PredictOptions(tile=8, progress=False),
    )
    np.testing.assert_array_equal(out.read("stellar"), want)
    meta = out.field_meta("stellar")
    assert meta["run_dir"] == "r" and meta["input_hashes"]["dm"] == source.field_meta("dm")["hash"]
    assert out.verify() == [] and (out.box, out.grid) == (30.0, GRID)

    other = FieldStore(tmp_path / "other")
    other.init(30.0, GRID // 2)
    with pytest.raises(StoreError, match="not the input store's"):
        predict_store(net, transform, source, ["dm", "subhalo"], other.root, "stellar")
    assert other.fields() == [] and not other.path("stellar").exists()
    with pytest.raises(StoreError, match="would overwrite its field 'dm'"):
        predict_store(net, transform, source, ["dm", "subhalo"], source.root, "dm")
    with pytest.raises(ValueError, match="trained on voxels of 2.5 Mpc/h"):
        predict_store(net, transform, source, ["dm", "subhalo"], other.root, "x", voxel_size=2.5)


def test_out_array_of_the_wrong_shape_is_refused(fields):
    net = _net(UNet3d(in_channels=2, channels=3, levels=1, convs=1))
    region = Region((0, 0, 0), (4, 4, 4), GRID)
    with pytest.raises(ValueError, match="out: shape"):
        _predict(net, fields, region, tile=4, out=np.empty((4, 4, 5), np.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_prediction_matches_cpu(fields):
    """Pinned reads, device-side normalisation and tiling, bf16 autocast and channels-last on a
    GPU give the CPU float32 field within bf16 precision (network output within 1e-2 of its
    largest magnitude)."""
    net = _net(UNet3d(in_channels=2, channels=3, levels=2, convs=1))
    region = REGIONS["wrapping"]
    cpu = _predict(net, fields, region, tile=6)
    gpu = _predict(net, fields, region, tile=10, device="cuda", channels_last=True)
    y_gpu, y_cpu = np.log(gpu), np.log(cpu)  # the network's output (denormalised by exp)
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=0, atol=1e-2 * np.abs(y_cpu).max())


@pytest.mark.parametrize("tile", [0, -8, 2.5, "8", True, None])
def test_a_tile_must_be_a_positive_integer(tile):
    with pytest.raises(ConfigError, match=r"tile: expected an integer >= 1, got"):
        check_tile(UNet3d(2, 1, 2, levels=2, convs=1), tile)


@pytest.mark.parametrize(
    ("make", "tile", "message"),
    [
        (lambda: UNet3d(2, 1, 2, levels=2, convs=1), 3, r"n % 4 == 2 \(nearest: 2 or 6\)"),
        (lambda: UNet3d(2, 1, 2, levels=2, convs=1), 8, r"n % 4 == 2 \(nearest: 6 or 10\)"),
        (lambda: PaperNet(in_channels=2, channels=1), 4, r"only side 1 \(nearest: 1\)"),
    ],
)
def test_a_tile_the_network_does_not_take_is_refused_not_rounded(make, tile, message):
    net = make()
    with pytest.raises(ConfigError, match=rf"tile: {type(net).__name__} does not take outputs of "
                       rf"{tile} voxels per side; valid sides: .*{message}"):  # fmt: skip
        check_tile(net, tile)
    valid = next(n for n in range(1, 20) if net.valid_output(n))
    assert check_tile(net, valid) == valid


def test_predict_command_refuses_a_bad_tile_and_writes_nothing(compose, tmp_path: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dm2gal.predict import predict
    from dm2gal.train.build import build

    cfg = compose(["callbacks=none", "trainer.limit_train_batches=1"])
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml", resolve=True)
    conf = Path(__file__).resolve().parents[1] / "conf"
    out = tmp_path / "box"
    cases = {
        "0": "expected an integer >= 1",
        "-8": "expected an integer >= 1",
        "2.5": "expected an integer >= 1",
        "3": r"UNet3d does not take outputs of 3 voxels per side; .*\(nearest: 2 or 4\)",
    }
    for tile, message in cases.items():
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            args = hydra_compose("predict", [f"run_dir={tmp_path}", f"out={out}", f"tile={tile}"])
        with pytest.raises(ConfigError, match=f"tile: {message}"):
            predict(args)
        assert not out.exists()
