"""The response of the galaxy power spectrum to a universe parameter, network against truth.

For a parameter ``theta`` and a pair of universes at ``theta - delta`` and ``theta + delta``
(everything else equal, the same initial-condition seed), the finite difference

    d ln P_gal / d theta  ~  [ln P(theta + delta) - ln P(theta - delta)] / (2 delta)

per k band, where ``P`` is the band's mean of the whole box's P(k) [(Mpc/h)^3]: of the true
stellar-mass field, of the network's mean field and of its draws (their mean P), and on a mock
of the oracle mean (the galaxy model's expectation given the halos: the truth's response
without the noise of its galaxies' random draws). Pairs with several seeds give the
seed-to-seed scatter (mean +- std, ddof 1) and, per field, the difference from the truth's
response paired seed by seed, with its standard error: the noise a goal is judged against.
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
FIELDS = ("truth", "network_mean", "network_draw", "oracle_mean")
#: the mock's field whose response is the truth's without its galaxies' random draws
ORACLE = "oracle_mean"


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
        if ORACLE in store.fields():
            fields[ORACLE] = [store.read(ORACLE, mmap=False)]
        powers.append(band_power(store.read(target, mmap=False), fields, store.box, options))
        values.append(parameters(store)[name])
    return log_derivative(powers[0], powers[1], values[1] - values[0])


def summarise_responses(
    per_seed: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per field and band: the responses of every seed, their mean and std (ddof 1; 0 for one
    seed); for every field but the truth, its relative error against the truth's mean, sign
    agreement, and its difference from the truth paired seed by seed (mean and standard
    error, std / sqrt(seeds); 0 for one seed)."""
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
            paired = np.array(entry["values"]) - np.array(truth[band]["values"])
            n = len(paired)
            entry["difference"] = float(paired.mean())
            entry["difference_se"] = float(paired.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return out


def response_goal(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], tolerance: float = 0.2
) -> dict[str, dict[str, Any]]:
    """Per field: ``met`` when its k <= 1 (``large`` band) response is within ``tolerance``
    of the truth's and of the truth's sign in every band; the ``verdict`` also weighs the noise:
    ``met``, ``within noise`` (not met, but its paired difference from the truth at k <= 1 is
    within 2 standard errors, and so is every band of the wrong sign) or ``missed``."""
    out = {}
    for field, bands in summary.items():
        if field == "truth":
            continue
        large = bands.get("large")
        within = large is not None and abs(large["relative_error"]) <= tolerance
        signs = all(entry["same_sign"] for entry in bands.values())
        met = bool(within and signs)
        noisy = [large] if large is not None and not within else []
        noisy += [entry for entry in bands.values() if not entry["same_sign"]]
        in_noise = all(abs(e["difference"]) <= 2 * e["difference_se"] for e in noisy)
        verdict = "met" if met else ("within noise" if noisy and in_noise else "missed")
        out[field] = {
            "large_relative_error": None if large is None else large["relative_error"],
            "same_sign_every_band": signs,
            "met": met,
            "verdict": verdict,
        }
    return out


def responses_markdown(responses: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: per parameter, field and band, d ln P / d theta mean +- std over the
    seeds, the field's relative error against the truth, its paired difference from the truth
    (mean +- standard error) and sign agreement; then each field's verdict."""
    lines = [
        "| parameter | field | band | d ln P / d θ | rel. err. vs truth | − truth (paired) "
        "| same sign |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
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
                    "" if rel is None else f"{e['difference']:+.3g} ± {e['difference_se']:.2g}",
                    "" if "same_sign" not in e else ("yes" if e["same_sign"] else "no"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        for field, goal in block.get("goal", {}).items():
            verdicts.append(f"- {name}, {field}: {goal['verdict']}")
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(verdicts) + "\n" if verdicts else "")
