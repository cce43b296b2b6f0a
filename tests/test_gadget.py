"""GADGET / AREPO / TNG HDF5 readers on small files in the exact TNG layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from tng_layout import make_pair, write_snapshot

from dm2gal.io.gadget import GroupCatalog, SimFileError, Snapshot


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def test_dark_snapshot_chunks_masstable_and_wrap(pair):
    snap = Snapshot.find(pair.dark_dir, 99, chunk_rows=300)
    assert [p.name for p in snap.files] == [f"snap_099.{i}.hdf5" for i in range(3)]
    assert snap.box == pytest.approx(10.0)
    assert snap.count(1) == 2000 and snap.count(4) == 0
    chunks = list(snap.particles(1))
    # chunk 1 is empty (no PartType1 group); 1000 rows per other file in slices of 300
    assert len(chunks) == snap.n_chunks(1) == 8
    assert {c.path.name for c in chunks} == {"snap_099.0.hdf5", "snap_099.2.hdf5"}
    pos = np.concatenate([c.pos for c in chunks])
    np.testing.assert_allclose(pos, pair.dm_pos, rtol=0, atol=1e-12)
    assert pos.min() >= 0 and pos.max() < 10.0
    assert all(c.mass == pytest.approx(0.05e10) for c in chunks)  # Header/MassTable[1]
    assert sum(c.total_mass() for c in chunks) == pytest.approx(2000 * 0.05e10, rel=1e-12)


def test_stars_exclude_wind(pair):
    snap = Snapshot.find(pair.hydro_dir, 99)
    stars = list(snap.particles(4, exclude_wind=True))
    keep = ~pair.star_wind
    assert pair.star_wind.sum() > 10
    assert sum(len(c.pos) for c in stars) == keep.sum()
    mass = np.concatenate([c.mass for c in stars])
    np.testing.assert_allclose(mass, pair.star_mass[keep], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([c.pos for c in stars]), pair.star_pos[keep])
    everything = list(snap.particles(4))
    assert sum(len(c.pos) for c in everything) == len(pair.star_mass)


def test_high_word_totals(tmp_path):
    n = 10
    data = {1: {"Coordinates": np.zeros((n, 3))}}
    write_snapshot(tmp_path, 5, data, box_kpc=1000.0, mass_table=[0, 1, 0, 0, 0, 0],
                   high_word=[0, 1, 0, 0, 0, 0])  # fmt: skip
    with pytest.raises(SimFileError, match=rf"NumPart_Total \(\+HighWord\) = \[0, {2**32 + n},"):
        Snapshot.find(tmp_path, 5)


def test_group_catalogue_units_and_columns(pair):
    cat = GroupCatalog.find(pair.hydro_dir, 99)
    assert cat.totals == {"Group": 30, "Subhalo": 100}
    s = cat.read("Subhalo", ["SubhaloPos", "SubhaloMassType[4]", "SubhaloGrNr"])
    np.testing.assert_allclose(s["SubhaloPos"], pair.hydro_sub_pos, atol=1e-9)
    np.testing.assert_allclose(s["SubhaloMassType[4]"], pair.hydro_sub_mstar, rtol=1e-12)
    np.testing.assert_array_equal(s["SubhaloGrNr"], pair.hydro_sub_grnr)
    g = cat.read("Group", ["GroupMass"])
    np.testing.assert_allclose(g["GroupMass"], pair.hydro_group_mass, rtol=1e-12)


def test_gadget4_subhalo_group_nr_alias(tmp_path):
    groups = {"GroupPos": np.zeros((1, 3), np.float32)}
    subs = {"SubhaloPos": np.zeros((2, 3), np.float32), "SubhaloGroupNr": np.array([0, 0])}
    from tng_layout import write_groups

    write_groups(tmp_path, 3, groups, subs, box_kpc=1000.0, n_files=1)
    s = GroupCatalog.find(tmp_path, 3).read("Subhalo", ["SubhaloGrNr"])
    np.testing.assert_array_equal(s["SubhaloGrNr"], [0, 0])


# -- bad input: one clear error naming the file and the key -----------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(SimFileError, match="nope: no such directory"):
        Snapshot.find(tmp_path / "nope", 99)


def test_missing_chunk_file(pair):
    (pair.dark_dir / "snapdir_099" / "snap_099.2.hdf5").unlink()
    with pytest.raises(SimFileError, match=r"snap_099\.2\.hdf5: missing chunk file.*NumFilesPer"):
        Snapshot.find(pair.dark_dir, 99)


def test_truncated_file(pair):
    path = pair.dark_dir / "snapdir_099" / "snap_099.2.hdf5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SimFileError, match=r"snap_099\.2\.hdf5: not a readable HDF5 file"):
        Snapshot.find(pair.dark_dir, 99)


def test_not_hdf5(pair):
    path = pair.dark_dir / "groups_099" / "fof_subhalo_tab_099.0.hdf5"
    path.write_text("this is not HDF5\n")
    with pytest.raises(SimFileError, match=r"fof_subhalo_tab_099\.0\.hdf5: not a readable HDF5"):
        GroupCatalog.find(pair.dark_dir, 99)


def test_missing_dataset(pair):
    path = pair.dark_dir / "snapdir_099" / "snap_099.2.hdf5"
    with h5py.File(path, "a") as f:
        del f["PartType1/Coordinates"]
    with pytest.raises(SimFileError, match=r"snap_099\.2\.hdf5: missing dataset 'PartType1/Coo"):
        list(Snapshot.find(pair.dark_dir, 99).particles(1))


def test_missing_header_key(pair):
    path = pair.dark_dir / "snapdir_099" / "snap_099.0.hdf5"
    with h5py.File(path, "a") as f:
        del f["Header"].attrs["BoxSize"]
    with pytest.raises(SimFileError, match=r"snap_099\.0\.hdf5: missing header key 'Header/Box"):
        Snapshot.find(pair.dark_dir, 99)


def test_non_finite_coordinates(pair):
    path = pair.dark_dir / "snapdir_099" / "snap_099.2.hdf5"
    with h5py.File(path, "a") as f:
        f["PartType1/Coordinates"][5, 1] = np.nan
    with pytest.raises(SimFileError, match=r"snap_099\.2\.hdf5: 'PartType1/Coordinates' has non-f"):
        list(Snapshot.find(pair.dark_dir, 99).particles(1))


def test_no_masses_and_zero_mass_table(tmp_path):
    write_snapshot(tmp_path, 1, {1: {"Coordinates": np.ones((4, 3))}}, box_kpc=10.0, n_files=1)
    with pytest.raises(SimFileError, match=r"snap_001\.hdf5: missing dataset 'PartType1/Masses'"):
        list(Snapshot.find(tmp_path, 1).particles(1))


def test_bad_column(pair):
    with pytest.raises(SimFileError, match=r"'Subhalo/SubhaloMass' has shape \(\d+,\), cannot"):
        GroupCatalog.find(pair.hydro_dir, 99).read("Subhalo", ["SubhaloMass[2]"])


@pytest.mark.parametrize(
    ("kind", "chunk", "key", "value", "shown"),
    [
        ("snap", 1, "BoxSize", 20_000.0, "20000.0 differs from 10000.0"),
        ("snap", 2, "Redshift", 0.5, "0.5 differs from 0.0"),
        ("snap", 2, "Omega0", 0.25, "0.25 differs from 0.3089"),
        ("snap", 1, "OmegaLambda", 0.75, "0.75 differs from 0.6911"),
        ("snap", 2, "HubbleParam", 0.7, "0.7 differs from 0.6774"),
        ("snap", 1, "NumFilesPerSnapshot", np.int32(4), "4 differs from 3"),
        ("snap", 2, "NumPart_Total", np.array([0, 7, 0, 0, 0, 0], np.uint32), "[0, 7, 0, 0, 0,"),
        ("snap", 1, "MassTable", np.array([0, 0.1, 0, 0, 0, 0]), "[0.0, 0.1, 0.0, 0.0, 0.0, 0.0]"),
        ("groups", 1, "BoxSize", 20_000.0, "20000.0 differs from 10000.0"),
        ("groups", 2, "NumFiles", np.int32(2), "2 differs from 3"),
        ("groups", 2, "Ngroups_Total", np.int32(41), "41 differs from 40"),
        ("groups", 1, "Nsubgroups_Total", np.int32(7), "7 differs from 120"),
    ],
)
def test_every_chunk_header_agrees_with_the_first(pair, kind, chunk, key, value, shown):
    stem = "snapdir_099/snap_099" if kind == "snap" else "groups_099/fof_subhalo_tab_099"
    path = pair.dark_dir / f"{stem}.{chunk}.hdf5"
    with h5py.File(path, "a") as f:
        f["Header"].attrs[key] = value
    reader = Snapshot if kind == "snap" else GroupCatalog
    with pytest.raises(SimFileError) as err:
        reader.find(pair.dark_dir, 99)
    message = str(err.value)
    assert message.startswith(f"{path}: Header/{key} = ")
    assert shown in message and f"{stem}.0.hdf5" in message


def test_chunk_without_a_header_key_of_the_first(pair):
    path = pair.dark_dir / "groups_099" / "fof_subhalo_tab_099.2.hdf5"
    with h5py.File(path, "a") as f:
        del f["Header"].attrs["HubbleParam"]
    with pytest.raises(SimFileError, match=r"tab_099\.2\.hdf5: missing header key 'Header/Hubble"):
        GroupCatalog.find(pair.dark_dir, 99)
