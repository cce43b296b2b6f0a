"""Goals against the physical limit, pooled over runs and boxes (dm2gal.eval.limits)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script

from dm2gal.errors import MissingFileError
from dm2gal.eval.limits import GOALS, Goal, claims, claims_markdown, pool


def write_run(root: Path, scores: dict[str, dict[str, list[float]]]) -> Path:
    """A run directory whose realisations.json holds ``{field: {metric: values per box}}``."""
    out = root / "evaluation"
    out.mkdir(parents=True)
    data = {f: {m: {"values": v} for m, v in metrics.items()} for f, metrics in scores.items()}
    (out / "realisations.json").write_text(json.dumps(data))
    return root


P_ERR = "pk_ratio_abs_err_large"


def test_pooled_excess_stderr_and_verdicts_by_hand(tmp_path):
    a = write_run(
        tmp_path / "a",
        {
            "model_draw": {P_ERR: [0.10, 0.30], "total_mass_rel_err": [0.01, -0.05]},
            "oracle_draw": {P_ERR: [0.05, 0.10]},
        },
    )
    b = write_run(
        tmp_path / "b",
        {
            "model_draw": {P_ERR: [0.20], "total_mass_rel_err": [0.0]},
            "oracle_draw": {P_ERR: [0.08]},
        },
    )
    goals = [
        Goal("P", "model_draw", P_ERR, 0.02, "oracle_draw"),
        Goal("total", "model_draw", "total_mass_rel_err", 0.02, absolute=True),
        Goal("loose", "model_draw", P_ERR, 1.0),
        Goal("draws of a field the runs lack", "model_mean", P_ERR, 0.1),
    ]
    pooled, skipped = pool([a, b], goals)
    assert [g.label for g in skipped] == ["draws of a field the runs lack"]
    p, total, loose = pooled
    excess = np.array([0.10 - 0.07, 0.30 - 0.12, 0.20 - 0.10])
    assert p.n == 3 and p.boxes_met == 0
    assert math.isclose(p.value, 0.2) and math.isclose(p.limit, (0.07 + 0.12 + 0.10) / 3)
    assert math.isclose(p.excess, excess.mean())
    assert math.isclose(p.stderr, excess.std(ddof=1) / math.sqrt(3))
    assert p.verdict == "missed"  # 0.103 - 2 x 0.046 > 0
    excess = np.array([0.01, 0.05, 0.0]) - 0.02
    assert math.isclose(total.value, 0.02) and total.boxes_met == 2
    assert math.isclose(total.excess, excess.mean()) and total.verdict == "within noise"
    assert loose.verdict == "met" and loose.boxes_met == 3


def test_missing_scores_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match=str(tmp_path / "evaluation" / "realisations.json")):
        pool([tmp_path])


def test_cli_writes_the_table_of_every_goal(tmp_path):
    rng = np.random.default_rng(0)
    scores: dict[str, dict[str, list[float]]] = {}
    for goal in GOALS:
        for field in (goal.field, goal.reference):
            if field:
                scores.setdefault(field, {})[goal.metric] = rng.random(4).tolist()
    run = write_run(tmp_path / "run", scores)
    out = tmp_path / "limits.md"
    printed = run_script("dm2gal.limits", f"runs=[{run}]", f"out={out}").stdout
    table = out.read_text()
    assert table in printed and "# Goals over 4 boxes of 1 run(s)" in table
    assert "# The claim" in table
    assert sum(line.startswith("| draws'") or line.startswith("| mean's") for line in
               table.splitlines()) == len(GOALS)  # fmt: skip


R_LARGE = "rk_mean_large"


def test_claims_pick_the_strongest_benchmark_of_each_kind_by_hand(tmp_path):
    runs = [
        write_run(
            tmp_path / name,
            {
                "model_mean": {R_LARGE: mean, "total_mass_rel_err": [0.02, -0.04]},
                "model_draw": {R_LARGE: [0.90, 0.92]},
                "hod_a_mean": {R_LARGE: [0.95, 0.96], "total_mass_rel_err": [0.05, 0.05]},
                "hod_b_mean": {R_LARGE: [0.96, 0.97], "total_mass_rel_err": [-0.01, 0.03]},
                "hod_a_draw": {R_LARGE: [0.99, 0.99]},  # a draw never stands against a mean
                "hod_b_draw": {R_LARGE: [0.85, 0.90]},
                "oracle_mean": {R_LARGE: [0.99, 0.99]},
            },
        )
        for name, mean in (("a", [0.97, 0.98]), ("b", [0.97, 0.99]))
    ]
    metrics = {"mean": [R_LARGE, "total_mass_rel_err"], "draw": [R_LARGE]}
    rows = {(c.kind, c.metric): c for c in claims(runs, metrics)}
    mean = rows["mean", R_LARGE]
    # the strongest mean is hod_b (0.965 against 0.955); differences 0.01, 0.01, 0.01, 0.02
    assert (mean.network, mean.benchmark, mean.n) == ("model_mean", "hod_b_mean", 4)
    assert math.isclose(mean.diff, 0.0125) and math.isclose(mean.oracle, 0.99)
    d = np.array([0.01, 0.01, 0.01, 0.02])
    assert math.isclose(mean.stderr, d.std(ddof=1) / 2)
    assert math.isclose(mean.sigma, 0.0125 / mean.stderr) and mean.verdict == "network better"
    draw = rows["draw", R_LARGE]
    # the draw's only rival is hod_a_draw (0.99) over hod_b_draw: worse on every box
    assert draw.benchmark == "hod_a_draw" and draw.verdict == "hod_a_draw better"
    # |total| errors: 0.02, 0.04 against hod_b's 0.01, 0.03 -> the benchmark better
    total = rows["mean", "total_mass_rel_err"]
    assert total.benchmark == "hod_b_mean" and math.isclose(total.diff, 0.01)
    assert total.sigma < -1e6 and total.verdict == "hod_b_mean better"  # no spread
    text = claims_markdown(list(rows.values()))
    assert "| mean | rk_mean_large | model_mean | hod_b_mean | 0.9775 | 0.965 | 0.99 |" in text


def test_seeds_scored_on_the_same_boxes_count_each_box_once(tmp_path):
    """Three seeds on the same two universes are two samples: the paired difference is averaged
    over the seeds of each box, and its standard error taken over the boxes."""
    runs = []
    for seed, ours in enumerate(([0.97, 0.98], [0.96, 0.99], [0.98, 0.97])):
        run = write_run(
            tmp_path / f"seed{seed}",
            {"model_mean": {R_LARGE: ours}, "hod_a_mean": {R_LARGE: [0.95, 0.96]}},
        )
        boxes = [str(tmp_path / "box1000"), str(tmp_path / "box1001")]
        (run / "evaluation" / "realisations_boxes.json").write_text(json.dumps(boxes))
        runs.append(run)
    (claim,) = claims(runs, {"mean": [R_LARGE]})
    # per box: 0.97 - 0.95 = 0.02 and 0.98 - 0.96 = 0.02 -> no spread over the 2 boxes
    assert claim.n == 2 and math.isclose(claim.diff, 0.02) and claim.stderr < 1e-12
    pooled, _ = pool(runs, [Goal("r", "model_mean", R_LARGE, 0.0, "hod_a_mean")])
    assert pooled[0].n == 2 and math.isclose(pooled[0].excess, 0.02)
