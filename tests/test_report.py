"""write_report writes every table and real PNG images, and refuses bad input before writing."""

from __future__ import annotations

import csv
import json
import struct
from dataclasses import replace

import numpy as np
import pytest

from dm2gal.eval.plots import PLOTS
from dm2gal.eval.report import ReportOptions, write_report

BOX = 75.0  # Mpc/h
N = 16
K_PAIRS = ((0.3, 0.4),)
THETAS = np.linspace(0.2, 2.9, 4)


def fields() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A skewed truth, a noisy copy ('model') and an independent field ('hod')."""
    rng = np.random.default_rng(0)
    truth = rng.gamma(0.5, 1e9, size=(N, N, N)).astype(np.float32)
    truth[truth < 1e8] = 0.0  # empty voxels, as in a stellar-mass field
    model = (truth * rng.lognormal(0.0, 0.3, size=truth.shape)).astype(np.float32)
    hod = rng.gamma(0.5, 1e9, size=(N, N, N)).astype(np.float32)
    return truth, {"model": model, "hod": hod}


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the PNG signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_report_writes_every_artefact(tmp_path):
    truth, preds = fields()
    logged = {}
    options = ReportOptions(k_pairs=K_PAIRS, thetas=THETAS, slice_width=3)
    metrics = write_report(tmp_path, BOX, truth, preds, options, logger=logged.__setitem__)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert set(metrics["models"]) == {"model", "hod"}
    model, hod = metrics["models"]["model"], metrics["models"]["hod"]
    expected_total = preds["model"].sum(dtype=np.float64) / truth.sum(dtype=np.float64) - 1
    assert model["total_mass_rel_err"] == pytest.approx(expected_total, rel=1e-6)
    assert model["rk_mean"] > 0.8 > 0.2 > abs(hod["rk_mean"])
    assert model["bk_ratio_abs_err"] > 0 and hod["bk_ratio_abs_err"] > 0

    pk = read_csv(tmp_path / "pk.csv")
    assert len(pk) == int(np.sqrt(3) * N / 2) and set(pk[0]) >= {"k", "pk_truth", "ratio_hod"}
    assert len(read_csv(tmp_path / "rk.csv")) == len(pk)
    bk = read_csv(tmp_path / "bk.csv")
    assert len(bk) == len(THETAS) and float(bk[0]["B_truth"]) > 0 and "Q_model" in bk[0]
    pdf = read_csv(tmp_path / "pdf.csv")
    assert len(pdf) == 40
    width = np.diff([float(pdf[0]["log10m_lo"]), float(pdf[0]["log10m_hi"])])[0]
    non_empty = np.count_nonzero(truth) / truth.size
    assert sum(float(row["pdf_truth"]) for row in pdf) * width == pytest.approx(non_empty)

    for stem in PLOTS:
        w, h = png_size(tmp_path / f"{stem}.png")
        assert 200 < w < 3000 and 200 < h < 3000
        assert logged[f"report/{stem}"] == str(tmp_path / f"{stem}.png")
    assert logged["hod/rk_mean"] == hod["rk_mean"]
    assert not list(tmp_path.glob(".*tmp"))


def test_perfect_prediction_scores_perfectly(tmp_path):
    truth, _ = fields()
    options = ReportOptions(k_pairs=K_PAIRS)
    metrics = write_report(tmp_path, BOX, truth, {"copy": truth.copy()}, options)
    scores = metrics["models"]["copy"]
    assert scores["rk_mean"] == pytest.approx(1.0, abs=1e-9)
    assert scores["total_mass_rel_err"] == scores["log_rmse"] == scores["bk_ratio_abs_err"] == 0.0


def test_band_scores_and_oracle_ratios(tmp_path):
    """Band keys per field, the band edges in metrics.json, ratios to oracle_mean's 1 - r^2."""
    truth, preds = fields()
    bands = {"low": [0.0, 0.2], "high": [0.2, 0.6]}
    options = ReportOptions(k_pairs=K_PAIRS, thetas=THETAS, slice_width=3, bands=bands)
    with_oracle = {**preds, "oracle_mean": preds["model"]}
    metrics = write_report(tmp_path, BOX, truth, with_oracle, options)
    assert metrics["bands"] == bands
    pk = read_csv(tmp_path / "pk.csv")
    rk = read_csv(tmp_path / "rk.csv")
    k = np.array([float(row["k"]) for row in pk])
    for name, scores in metrics["models"].items():
        ratio = np.array([float(row[f"ratio_{name}"]) for row in pk])
        r = np.array([float(row[f"r_{name}"]) for row in rk])
        for band, (lo, hi) in bands.items():
            sel = (k > lo) & (k <= hi)
            assert scores[f"rk_mean_{band}"] == pytest.approx(r[sel].mean(), rel=1e-6)
            err = np.abs(ratio[sel] - 1).mean()
            assert scores[f"pk_ratio_abs_err_{band}"] == pytest.approx(err, rel=1e-6)
            decor = scores[f"decorrelation_{band}"]
            assert decor == pytest.approx(np.mean(1 - r[sel] ** 2), rel=1e-6)
            oracle = metrics["models"]["oracle_mean"][f"decorrelation_{band}"]
            assert scores[f"decorrelation_ratio_{band}"] == pytest.approx(decor / oracle)
    assert metrics["models"]["oracle_mean"]["decorrelation_ratio_low"] == 1.0
    assert metrics["models"]["hod"]["decorrelation_ratio_high"] > 5  # an unrelated field
    # without an oracle: band scores, no ratios; default bands of the 16^3 / 75 Mpc/h grid
    plain = write_report(tmp_path / "plain", BOX, truth, preds, replace(options, bands=None))
    assert list(plain["bands"]) == ["large", "rest"]  # k_Nyq / 2 = 0.335 h/Mpc < 1 h/Mpc
    assert "rk_mean_large" in plain["models"]["model"]
    assert not any(key.startswith("decorrelation_ratio") for key in plain["models"]["model"])
    with pytest.raises(ValueError, match="evaluation.report.bands"):
        ReportOptions(bands={"x": [2.0, 1.0]})


@pytest.mark.parametrize(
    ("preds", "kwargs", "match"),
    [
        ({}, {}, "predictions is empty"),
        ({"truth": None}, {}, "cannot be named 'truth'"),
        ({"model": np.ones((8, 8, 8), np.float32)}, {}, "has shape"),
        ({"model": None}, {"slice_width": N + 1}, "slice_width"),
        ({"model": None}, {"slice_width": 0}, "slice_width"),
        ({"model": None}, {"k_pairs": ((0.5, 0.6),)}, "beyond the grid"),
    ],
)
def test_bad_input_raises_and_writes_nothing(tmp_path, preds, kwargs, match):
    truth, _ = fields()
    preds = {name: truth if f is None else f for name, f in preds.items()}
    out = tmp_path / "report"
    with pytest.raises(ValueError, match=match):
        write_report(out, BOX, truth, preds, ReportOptions(**{"k_pairs": K_PAIRS, **kwargs}))
    assert not out.exists()


def test_torch_report_agrees_with_the_pylians_reference(tmp_path):
    """Reports measure with torch by default; every score equals the Pylians path's to 1e-5."""
    truth, preds = fields()
    got = {}
    for backend in ("torch", "pylians"):
        options = ReportOptions(k_pairs=K_PAIRS, thetas=THETAS, backend=backend)
        got[backend] = write_report(tmp_path / backend, BOX, truth, preds, options)["models"]
    for name, scores in got["pylians"].items():
        for key, value in scores.items():
            assert got["torch"][name][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
    pk = {b: read_csv(tmp_path / b / "pk.csv") for b in got}
    for row_t, row_p in zip(pk["torch"], pk["pylians"], strict=True):
        assert float(row_t["pk_model"]) == pytest.approx(float(row_p["pk_model"]), rel=1e-5)


def test_draws_score_as_the_mean_of_their_reports_with_their_std(tmp_path):
    """A random field of two draws scores exactly as the mean of the two draws' own reports,
    with their sample std (ddof=1) in the ``draws`` block; one draw scores as itself (std
    null); plots band it; a report without draws has no ``draws`` block."""
    truth, preds = fields()
    rng = np.random.default_rng(1)
    draws = [(truth * rng.lognormal(0.0, 0.5, truth.shape)).astype(np.float32) for _ in range(2)]
    options = ReportOptions(k_pairs=K_PAIRS, thetas=THETAS, slice_width=3)
    logged = {}
    metrics = write_report(
        tmp_path / "r", BOX, truth, preds, options, logged.__setitem__, draws={"model_draw": draws}
    )
    assert list(metrics["models"]) == ["model", "hod", "model_draw"]
    alone = [
        write_report(tmp_path / f"d{i}", BOX, truth, {"d": d}, options)["models"]["d"]
        for i, d in enumerate(draws)
    ]
    block = metrics["draws"]["model_draw"]
    assert block["count"] == 2
    for key, value in metrics["models"]["model_draw"].items():
        pair = [alone[0][key], alone[1][key]]
        assert block["values"][key] == pytest.approx(pair, rel=1e-6)
        assert value == pytest.approx(np.mean(pair), rel=1e-6)
        assert block["std"][key] == pytest.approx(abs(pair[0] - pair[1]) / np.sqrt(2), abs=1e-9)
    assert block["std"]["pk_ratio_abs_err"] > 0
    assert logged["model_draw/pk_ratio_abs_err/std"] == block["std"]["pk_ratio_abs_err"]
    # curves: the draws' mean per k in the CSV table
    pk = [float(r["pk_model_draw"]) for r in read_csv(tmp_path / "r" / "pk.csv")]
    each = [[float(r["pk_d"]) for r in read_csv(tmp_path / f"d{i}" / "pk.csv")] for i in range(2)]
    np.testing.assert_allclose(pk, np.mean(each, axis=0), rtol=1e-6)
    for stem in PLOTS:
        assert png_size(tmp_path / "r" / f"{stem}.png")[0] > 200

    one = write_report(tmp_path / "one", BOX, truth, {}, options, draws={"model_draw": draws[:1]})
    assert one["models"]["model_draw"] == alone[0]
    assert set(one["draws"]["model_draw"]["std"].values()) == {None}
    assert "draws" not in write_report(tmp_path / "plain", BOX, truth, preds, options)
    with pytest.raises(ValueError, match="either a prediction or a set of draws"):
        write_report(tmp_path / "x", BOX, truth, preds, options, draws={"model": draws})
