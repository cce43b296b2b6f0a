"""The sweep table: one row per run, its Markdown / CSV text, and the headline view to read
(the swept keys and the headline scores, references once on top)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm2gal.eval.headline import headline_metrics, is_reference


@dataclass
class SweepTable:
    """The aggregated sweep of the multirun folder ``root``: ``rows`` (one dict per run) over
    ``columns``, the runs' ``optimized_metric`` (``objective``, ranked by ``mode``), and where
    the tables and the plot were written."""

    columns: list[str]
    rows: list[dict[str, Any]]
    overrides: list[str] = field(default_factory=list)
    objective: str | None = None
    mode: str = "min"
    root: Path = Path(".")
    csv: Path | None = None
    markdown: Path | None = None
    plot: Path | None = None
    study: dict[str, Any] | None = None

    def column(self, name: str) -> list[Any]:
        """The values of one column, ``None`` where a run has none."""
        return [row.get(name) for row in self.rows]

    @property
    def swept(self) -> list[str]:
        """The overrides whose value differs between runs (all of them for a single run)."""
        if len(self.rows) < 2:
            return list(self.overrides)
        return [k for k in self.overrides if len({str(v) for v in self.column(k)}) > 1]

    def label(self, row: dict[str, Any]) -> str:
        """A run's swept values (``model=unet3d, loss=mse``), else its directory."""
        return ", ".join(f"{k}={row.get(k)}" for k in self.swept) or row["run"]

    def sorted_rows(self) -> list[dict[str, Any]]:
        """The rows by :attr:`objective` (best first, per :attr:`mode`), rows without it last."""
        if self.objective is None:
            return list(self.rows)
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [r for r in self.rows if isinstance(r.get(self.objective), float)]
        rest = [r for r in self.rows if not isinstance(r.get(self.objective), float)]
        return sorted(scored, key=lambda r: sign * r[self.objective]) + rest


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format_cell(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """CSV text, empty cells where a run has no value."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return buf.getvalue()


def eval_fields(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluated fields (``model``, ``hod_binned``, ...) in order of first appearance."""
    out: dict[str, None] = {}
    for row in rows:
        for key in row:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[1] != "margin":
                out[parts[1]] = None
    return list(out)


def references(table: SweepTable) -> dict[str, dict[str, Any]]:
    """``{field: row}`` of each reference field (HOD, oracle): the first run that has it."""
    out: dict[str, dict[str, Any]] = {}
    for name in eval_fields(table.rows):
        if is_reference(name):
            out[name] = next(r for r in table.rows if any(k.startswith(f"eval/{name}/") for k in r))
    return out


def headline_view(table: SweepTable) -> tuple[list[str], list[dict[str, Any]]]:
    """The table to read: run, field, status, the swept keys, the optimised metric and the
    headline scores of each network field (one row per run and field, sorted by the optimised
    metric), with each reference field (HOD, oracle) once as a row on top."""
    fields = eval_fields(table.rows)
    metrics = headline_metrics(
        key.split("/")[2] for row in table.rows for key in row if key.count("/") == 2
    )
    metrics = [m for m in metrics if any(f"eval/{f}/{m}" in r for r in table.rows for f in fields)]
    objective = [table.objective] if table.objective in table.columns else []
    columns = ["run", *(["field"] if fields else []), "status", *table.swept, *objective, *metrics]
    rows = [
        {"run": "", "field": name, "status": "reference"}
        | {m: row.get(f"eval/{name}/{m}") for m in metrics}
        for name, row in references(table).items()
    ]
    for row in table.sorted_rows():
        base = {c: row.get(c) for c in ("run", "status", *table.swept, *objective)}
        networks = [
            f
            for f in fields
            if not is_reference(f) and any(k.startswith(f"eval/{f}/") for k in row)
        ]
        for name in networks:
            rows.append(base | {"field": name} | {m: row.get(f"eval/{name}/{m}") for m in metrics})
        if not networks:
            rows.append(base)
    return columns, rows
