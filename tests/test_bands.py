"""Tests of the k-band scores against hand-computed numbers."""

import numpy as np
import pytest

from dm2gal.stats.bands import (
    Band,
    band_edges,
    band_scores,
    decorrelation_ratios,
    default_bands,
    parse_bands,
)


def test_default_bands_of_the_default_mock_grid():
    # 75 Mpc/h, 128^3: kF = 2 pi / 75 = 0.0837758, kN = 64 kF = 5.361651, kN / 2 = 2.680826,
    # k_mid = sqrt(1 * 2.680826) = 1.637323
    bands = default_bands(75.0, 128)
    assert [b.name for b in bands] == ["large", "intermediate", "small", "rest"]
    edges = np.array([(b.lo, b.hi) for b in bands])
    expected = [(0, 1), (1, 1.637323), (1.637323, 2.680826), (2.680826, 5.361651)]
    np.testing.assert_allclose(edges, expected, rtol=1e-6)


def test_coarse_grid_keeps_large_and_rest_only():
    # 100 Mpc/h, 16^3: kN = 8 * 0.0628319 = 0.502655 < 2 h/Mpc, so no intermediate or small band
    bands = default_bands(100.0, 16)
    assert [(b.name, round(b.lo, 6), round(b.hi, 6)) for b in bands] == [
        ("large", 0.0, 0.251327),
        ("rest", 0.251327, 0.502655),
    ]


def test_band_scores_and_ratios_by_hand():
    k = np.array([0.5, 1.0, 1.5, 2.5, 4.0, 6.0])
    r = np.array([0.9, 0.8, 0.6, 0.5, 0.2, 0.1])
    ratio = np.array([1.1, 0.8, 1.0, 0.5, 2.0, 3.0])
    bands = parse_bands({"a": [0, 1], "b": [1, 2], "c": [5, 5.5]}, 75.0, 128)
    scores = band_scores(k, ratio, r, bands)
    expected = {
        "rk_mean_a": 0.85,  # (0.9 + 0.8) / 2; k = 1 is in (0, 1]
        "pk_ratio_abs_err_a": 0.15,  # (0.1 + 0.2) / 2
        "decorrelation_a": 0.275,  # (0.19 + 0.36) / 2
        "rk_mean_b": 0.6,
        "pk_ratio_abs_err_b": 0.0,
        "decorrelation_b": 0.64,
    }  # band c holds no bin: left out
    assert scores.keys() == expected.keys()
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    other = {"decorrelation_a": 0.55, "decorrelation_b": 0.32}
    ratios = decorrelation_ratios({"oracle_mean": scores, "x": other}, bands, "oracle_mean")
    assert ratios["x"] == pytest.approx(
        {"decorrelation_ratio_a": 2.0, "decorrelation_ratio_b": 0.5}
    )
    assert ratios["oracle_mean"] == pytest.approx(
        {"decorrelation_ratio_a": 1.0, "decorrelation_ratio_b": 1.0}
    )


def test_bad_bands_name_the_problem():
    with pytest.raises(ValueError, match="band 'x'"):
        Band("x", 2.0, 1.0)
    with pytest.raises(ValueError, match="bands.y"):
        parse_bands({"y": [1.0]}, 75.0, 128)
    with pytest.raises(ValueError, match="empty"):
        parse_bands({}, 75.0, 128)
    with pytest.raises(KeyError, match="oracle_mean"):
        decorrelation_ratios({"x": {}}, default_bands(75.0, 128), "oracle_mean")
    with pytest.raises(ValueError, match="one length"):
        band_scores(np.ones(3), np.ones(2), np.ones(3), default_bands(75.0, 128))


def test_band_edges_for_plots():
    assert band_edges(parse_bands({"a": [0, 1], "b": [1, 2], "c": [5, 5.5]}, 1.0, 2)) == [
        1.0,
        2.0,
        5.0,
        5.5,
    ]
