"""CAMELS parameter tables (dm2gal.io.camels_table) and a set of CAMELS simulations trained on
together (dm2gal.io.sources.CamelsSet)."""

from pathlib import Path

import numpy as np
import pytest
from tng_layout import make_pair

from dm2gal.data import FieldDataModule
from dm2gal.io.camels_table import CamelsTableError, camels_rows, read_camels_table
from dm2gal.io.parameters import read_parameters
from dm2gal.io.sources import CamelsSet, SourceError
from dm2gal.train.build import compose_train, data_module_config

REAL_TABLE = (
    Path(__file__).parent / "data" / "camels" / "CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt"
)
NAMES = ["Om0", "sigma8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2"]
HEADER = "#Name  Omega_m  sigma_8  A_SN1     A_AGN1  A_SN2  A_AGN2  seed\n"


def test_reads_the_real_camels_table():
    rows = read_camels_table(REAL_TABLE)
    assert list(rows) == ["LH_0", "LH_1", "LH_2", "LH_3", "LH_4", "LH_999"]
    first, last = rows["LH_0"], rows["LH_999"]
    assert list(first.parameters) == NAMES
    assert list(first.parameters.values()) == [0.309, 0.979, 3.11234, 1.12194, 0.6685, 0.53182]
    assert first.seed == 0 and last.seed == 999
    values = [0.4322, 0.6142, 1.28521, 0.35799, 1.1591, 0.86754]
    assert last.parameters == dict(zip(NAMES, values, strict=True))
    assert [r.name for r in camels_rows(REAL_TABLE, ["LH_3", "LH_1"])] == ["LH_3", "LH_1"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("#Name Omega_m sigma_8\n", r":1: expected a header '#Name <parameters...> seed'"),
        (HEADER + "  LH_0 0.3 0.8 1 1 1 1 0\n  LH_1 0.3 0.8 1 1 1 7\n", r":3: expected 8 columns"),
        (HEADER + "  LH_0 0.3 x 1 1 1 1 0\n", r":2: expected numbers and an integer seed"),
        (HEADER + "  LH_0 0.3 nan 1 1 1 1 0\n", r":2: non-finite values of \['sigma8'\]"),
        (HEADER + "  LH_0 0.3 0.8 1 1 1 1 0\n  LH_0 0.3 0.8 1 1 1 1 0\n", "listed twice"),
    ],
)
def test_a_bad_table_names_the_file_and_line(tmp_path, text, match):
    path = tmp_path / "CosmoAstroSeed_X_LH.txt"
    path.write_text(text)
    with pytest.raises(CamelsTableError, match=match):
        read_camels_table(path)


def test_a_missing_simulation_or_file_is_named(tmp_path):
    with pytest.raises(CamelsTableError, match=r"no rows for the simulations \['LH_7'\]"):
        camels_rows(REAL_TABLE, ["LH_0", "LH_7"])
    with pytest.raises(CamelsTableError, match="nothere.txt: CAMELS parameter table not found"):
        read_camels_table(tmp_path / "nothere.txt")


def write_suite(root: Path, names: list[str]) -> Path:
    """CAMELS-layout pairs ``<root>/IllustrisTNG/<name>`` + ``IllustrisTNG_DM/<name>`` (single
    GADGET HDF5 files, snapshot 090, 25 Mpc/h), one random pair per name."""
    for seed, name in enumerate(names):
        make_pair(root / "tmp", layout="camels", snapshot=90, box_kpc=25_000.0, seed=seed)
        for suite in ("IllustrisTNG", "IllustrisTNG_DM"):
            (root / suite).mkdir(exist_ok=True)
            (root / "tmp" / suite / "LH_0").rename(root / suite / name)
    return root / "IllustrisTNG"


def test_a_camels_set_records_each_simulations_row_and_trains_on_all(tmp_path):
    suite = write_suite(tmp_path, ["LH_0", "LH_3", "LH_4"])
    options = {"grid": 16, "box": 25.0, "progress": False}
    source = CamelsSet(suite, ["LH_0", "LH_3"], REAL_TABLE, tmp_path / "stores",
                       test_names=["LH_4"], **options)  # fmt: skip
    rows = read_camels_table(REAL_TABLE)
    stores = source.stores()
    assert [s.root for s in stores] == [tmp_path / "stores" / "LH_0", tmp_path / "stores" / "LH_3"]
    for store, name in zip(stores, ["LH_0", "LH_3"], strict=True):
        assert read_parameters(store) == rows[name].parameters
    tests = source.build_all(source.test_universes())
    assert [read_parameters(t) for t in tests] == [rows["LH_4"].parameters]
    dm = FieldDataModule(source, crop=4, splits={"preset": None, "test": [0, 4], "val": [8, 12]})
    dm.prepare_data()
    dm.setup("fit")
    assert dm.parameter_names == NAMES
    assert dm.parameter_ranges["Om0"] == (0.1906, 0.309)  # LH_3's and LH_0's
    batch = next(iter(dm.train_dataloader()))
    want = [list(rows[n].parameters.values()) for n in ("LH_0", "LH_3")]
    for params in batch["params"].numpy():
        assert any(np.allclose(params, w) for w in want)
    picked = CamelsSet(suite, ["LH_0"], REAL_TABLE, tmp_path / "other", parameters=["sigma8"],
                       **options)  # fmt: skip
    assert read_parameters(picked.build()) == {"sigma8": 0.979}


def test_camels_set_options_are_checked(tmp_path):
    with pytest.raises(SourceError, match="share"):
        CamelsSet(tmp_path, ["LH_0"], REAL_TABLE, tmp_path, test_names=["LH_0"])
    with pytest.raises(SourceError, match=r"'parameters': \['w0'\] are not columns"):
        CamelsSet(tmp_path, ["LH_0"], REAL_TABLE, tmp_path, parameters=["w0"]).stores()


def test_data_camels_lh_composes():
    cfg = compose_train(["data=camels_lh", "data.root=/sims/CAMELS/IllustrisTNG", "model=unet3d"])
    source = data_module_config(cfg.data).source
    assert source.table == "/sims/CAMELS/IllustrisTNG/CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt"
    assert len(source.names) >= 16 and not set(source.names) & set(source.test_names)
    assert source.parameters == NAMES == list(cfg.model.parameters)
