"""The readers on files written by real codes (TNG web API cutouts, GADGET-4), if present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dm2gal.io.gadget import Snapshot
from dm2gal.io.paint import paint

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
RHO_CRIT = 2.775366e11  # critical density, (Msun/h) / (Mpc/h)^3

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")


def test_tng50_dark_cutout_masstable_and_units():
    snap = Snapshot([REAL / "tng50-1-dark_cutout_z20_parttype1.hdf5"])
    assert snap.box == pytest.approx(35.0)  # 35000 ckpc/h
    assert snap.info.redshift == pytest.approx(20.0465, abs=1e-3)
    assert (snap.info.hubble, snap.info.omega0) == (0.6774, 0.3089)
    assert snap.count(1) == 908 and snap.count(4) == 0
    (chunk,) = list(snap.particles(1))
    assert chunk.pos.shape == (908, 3) and chunk.pos.dtype == np.float64
    assert chunk.pos.min() >= 0 and chunk.pos.max() < 35.0
    # no Masses dataset: MassTable[1] = 3.6476e-5 x 1e10 Msun/h, which is the mean density of
    # matter in the box shared by TNG50-1-Dark's 2160^3 particles
    assert chunk.mass == pytest.approx(3.6475561e5, rel=1e-6)
    assert chunk.mass == pytest.approx(0.3089 * RHO_CRIT * 35.0**3 / 2160**3, rel=1e-3)
    # a subhalo cutout at z=20 is compact: kpc/h read as Mpc/h would spread it over the box
    assert (np.ptp(chunk.pos, axis=0) < 0.2).all()
    field = paint(chunk.pos, chunk.mass, 16, snap.box)
    assert field.sum(dtype=np.float64) == pytest.approx(908 * chunk.mass, rel=1e-6)


def test_tng50_empty_chunk():
    snap = Snapshot([REAL / "tng50-1_cutout_z20_empty.hdf5"])
    assert snap.num_total.tolist() == [0] * 6
    assert snap.box == pytest.approx(35.0)
    for ptype in range(6):
        assert list(snap.particles(ptype)) == []
    assert snap.n_chunks(1) == 0


def test_gadget4_two_types_uint64_float32_parameters():
    snap = Snapshot([REAL / "gadget4_lcdm_gas_32cube_L50_z0.hdf5"], chunk_rows=10_000)
    assert len(snap.num_total) == 2 and snap.num_total.tolist() == [32768, 32768]
    assert snap.count(4) == 0  # no such type in a 2-type header
    assert snap.box == pytest.approx(50.0)
    # cosmology only in the Parameters group
    assert (snap.info.omega0, snap.info.hubble, snap.info.omega_lambda) == (0.3, 0.7, 0.7)
    gas, dm = list(snap.particles(0)), list(snap.particles(1))
    assert len(dm) == snap.n_chunks(1) == 4
    assert dm[0].pos.dtype == np.float32
    pos = np.concatenate([c.pos for c in dm])
    assert pos.shape == (32768, 3) and pos.min() >= 0 and pos.max() < 50.0
    m_gas, m_dm = gas[0].mass, dm[0].mass
    assert m_dm == pytest.approx(27.5279965e10, rel=1e-6)
    # all particles together hold the box's matter: Omega0 * rho_crit * L^3
    total = 32768 * (m_gas + m_dm)
    assert total == pytest.approx(0.3 * RHO_CRIT * 50.0**3, rel=2e-3)
    field = np.zeros((16,) * 3, np.float32)
    for c in dm:
        paint(c.pos, c.mass, 16, snap.box, out=field)
    assert field.sum(dtype=np.float64) == pytest.approx(32768 * m_dm, rel=1e-6)
