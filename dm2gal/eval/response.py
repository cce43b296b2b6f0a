"""The response of the galaxy power spectrum to a universe parameter, network against truth.

For a parameter ``theta`` and a pair of universes at ``theta - delta`` and ``theta + delta``
(everything else equal, the same initial-condition seed), the finite difference

    d ln P_gal / d theta  ~  [ln P(theta + delta) - ln P(theta - delta)] / (2 delta)

per k band, where ``P`` is the band's mean of the whole box's P(k) [(Mpc/h)^3]: of the true
stellar-mass field, of the network's mean field and of its draws (their mean P). Pairs with
several seeds give the seed-to-seed scatter (mean +- std, ddof 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dm2gal.eval.report import ReportOptions
from dm2gal.io.store import FieldStore
from dm2gal.stats.bands import Band, parse_bands

#: ``predict(store) -> [mean, *draws]``: the network's whole-box fields on a universe
Predict = Callable[[FieldStore], Sequence[np.ndarray]]
FIELDS = ("truth", "network_mean", "network_draw")


def band_power(
    truth: np.ndarray,
    others: Mapping[str, Sequence[np.ndarray]],
    box: float,
    options: ReportOptions,
) -> dict[str, dict[str, float]]:
    """Per field (``truth`` and each of ``others``, a field as its draws: their mean P), the
    mean P(k) [(Mpc/h)^3] over each k band's bins."""
    bands = parse_bands(options.bands, box, truth.shape[0])
    out: dict[str, dict[str, float]] = {}
    for name, fields in others.items():
        spectra = [options.cross_power(truth, field, box) for field in fields]
        k = spectra[0].k
        out["truth"] = _band_means(k, spectra[0].pk_a, bands)
        out[name] = _band_means(k, np.mean([s.pk_b for s in spectra], axis=0), bands)
    return out


def _band_means(k: np.ndarray, pk: np.ndarray, bands: Sequence[Band]) -> dict[str, float]:
    return {
        b.name: float(np.mean(pk[(k > b.lo) & (k <= b.hi)]))
        for b in bands
        if ((k > b.lo) & (k <= b.hi)).any()
    }


def log_derivative(
    low: Mapping[str, Mapping[str, float]], high: Mapping[str, Mapping[str, float]], step: float
) -> dict[str, dict[str, float]]:
    """``(ln P_high - ln P_low) / step`` per field and band."""
    return {
        field: {b: float(np.log(high[field][b] / low[field][b]) / step) for b in low[field]}
        for field in low
    }


def pair_response(
    pair: tuple[FieldStore, FieldStore],
    name: str,
    target: str,
    predict: Predict,
    options: ReportOptions,
    parameters: Callable[[FieldStore], Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """d ln P / d ``name`` per field and band from the universes ``pair`` (low, high)."""
    powers, values = [], []
    for store in pair:
        mean, *draws = predict(store)
        fields = {"network_mean": [mean]} | ({"network_draw": draws} if draws else {})
        powers.append(band_power(store.read(target, mmap=False), fields, store.box, options))
        values.append(parameters(store)[name])
    return log_derivative(powers[0], powers[1], values[1] - values[0])


def summarise_responses(
    per_seed: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per field and band: the responses of every seed, their mean and std (ddof 1; 0 for one
    seed), and the network's relative error against the truth's mean and sign agreement."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for field in per_seed[0]:
        out[field] = {}
        for band in per_seed[0][field]:
            values = np.array([r[field][band] for r in per_seed])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[field][band] = {"values": values.tolist(), "mean": float(values.mean()), "std": std}
    truth = out["truth"]
    for field in out:
        if field == "truth":
            continue
        for band, entry in out[field].items():
            reference = truth[band]["mean"]
            entry["relative_error"] = float(entry["mean"] / reference - 1.0)
            entry["same_sign"] = bool(np.sign(entry["mean"]) == np.sign(reference))
    return out


def response_goal(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], tolerance: float = 0.2
) -> dict[str, dict[str, Any]]:
    """Per network field: met when its k <= 1 (``large`` band) response is within
    ``tolerance`` of the truth's and of the truth's sign in every band."""
    out = {}
    for field, bands in summary.items():
        if field == "truth":
            continue
        large = bands.get("large")
        within = large is not None and abs(large["relative_error"]) <= tolerance
        signs = all(entry["same_sign"] for entry in bands.values())
        out[field] = {
            "large_relative_error": None if large is None else large["relative_error"],
            "same_sign_every_band": signs,
            "met": bool(within and signs),
        }
    return out


def responses_markdown(responses: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: per parameter, field and band, d ln P / d theta mean +- std over the
    seeds and the network's relative error against the truth."""
    lines = [
        "| parameter | field | band | d ln P / d θ | rel. err. vs truth | same sign |",
        "|---|---|---|---|---|---|",
    ]
    for name, block in responses.items():
        for field, bands in block["summary"].items():
            for band, e in bands.items():
                rel = e.get("relative_error")
                cells = [
                    name,
                    field,
                    band,
                    f"{e['mean']:.3g} ± {e['std']:.2g}",
                    "" if rel is None else f"{rel:+.1%}",
                    "" if "same_sign" not in e else ("yes" if e["same_sign"] else "no"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
