"""Learning-curve and ablation tables from evaluated runs.

    python docs/results/scripts/learning_curve.py out.md out.png name=dir1,dir2 [name=...]

Each ``dir`` holds ``evaluation/realisations.json`` (``python evaluate.py run_dir=<run>
out_dir=<dir> evaluation.realisations=5``). Per configuration the seeds' scores are averaged
per unseen box (:func:`dm2gal.eval.limits.per_box`), then mean +- standard error over the boxes;
a second table gives each configuration's paired per-box difference from ``steps1536`` (the
default), which cancels the box-to-box scatter the configurations share.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib
import numpy as np

from dm2gal.eval.limits import box_ids, per_box, read_realisations

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

ROWS = (  # label, field, metric
    ("mean 1-r² / oracle's, k<=1", "model_mean", "decorrelation_ratio_large"),
    ("mean 1-r² / oracle's, intermediate", "model_mean", "decorrelation_ratio_intermediate"),
    ("draws' P err, k<=1", "model_draw", "pk_ratio_abs_err_large"),
    ("draws' P err, intermediate", "model_draw", "pk_ratio_abs_err_intermediate"),
    ("mean total M* rel. err", "model_mean", "total_mass_rel_err"),
    ("draws' B err", "model_draw", "bk_ratio_abs_err"),
)
REFERENCES = {
    0: "hod_binned_env_mean",
    1: "hod_binned_env_mean",
    2: "oracle_draw",
    5: "oracle_draw",
}
BASE = "steps1536"


def per_box_values(runs: list[str], field: str, metric: str) -> np.ndarray:
    """``field``'s ``metric`` per unseen box, averaged over the runs (seeds)."""
    scores = [read_realisations(Path(r)) for r in runs]
    ids = [b for r, s in zip(runs, scores, strict=True) for b in box_ids(Path(r), s)]
    values = np.concatenate([np.asarray(s[field][metric]["values"], float) for s in scores])
    return per_box(values, ids)


def mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def tables(configs: dict[str, list[str]]) -> str:
    head = "| config | seeds | " + " | ".join(r[0] for r in ROWS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(ROWS)]
    for name, runs in configs.items():
        cells = ["{:.3f} ± {:.3f}".format(*mean_se(per_box_values(runs, f, m))) for _, f, m in ROWS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", f"| config - {BASE} | " + " | ".join(r[0] for r in ROWS) + " |"]
    lines.append("|---|" + "---:|" * len(ROWS))
    for name, runs in configs.items():
        if name == BASE:
            continue
        cells = []
        for _, field, metric in ROWS:
            diff = per_box_values(runs, field, metric) - per_box_values(
                configs[BASE], field, metric
            )
            cells.append("{:+.3f} ± {:.3f}".format(*mean_se(diff)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(configs.values()))
    lines.append("")
    for row, field in REFERENCES.items():
        label, _, metric = ROWS[row]
        m, e = mean_se(per_box_values(first, field, metric))
        lines.append(f"- {label}: {field} {m:.3f} ± {e:.3f}")
    return "\n".join(lines) + "\n"


def figure(configs: dict[str, list[str]], path: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = list(configs)
    for ax, row in zip(axes, (0, 2, 4), strict=True):
        label, field, metric = ROWS[row]
        stats = [mean_se(per_box_values(configs[n], field, metric)) for n in names]
        ax.errorbar(range(len(names)), [s[0] for s in stats], yerr=[s[1] for s in stats], fmt="o-")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(label)
        if row == 0:
            ax.axhline(1.0, color="k", ls="--", label="oracle mean")
        if row in REFERENCES:
            ref = mean_se(per_box_values(configs[names[0]], REFERENCES[row], metric))[0]
            ax.axhline(ref, color="C3", ls=":", label=REFERENCES[row])
            ax.legend(fontsize=7)
        else:
            ax.axhline(0.0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    out_md, out_png, *specs = sys.argv[1:]
    configs = {s.split("=")[0]: s.split("=")[1].split(",") for s in specs}
    Path(out_md).write_text(tables(configs))
    figure(configs, out_png)
    print(Path(out_md).read_text())
