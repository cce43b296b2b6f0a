"""Gather the steps of ``benchmarks/gpu_check.sh`` into ``gpu_check.json`` and ``gpu_check.md``.

    python benchmarks/gpu_report.py OUT_DIR --budget 480 --seconds 431 [--dry]

Reads ``OUT_DIR/steps.tsv`` (one line per step: name, exit status or ``skipped``, seconds,
limit, command), ``OUT_DIR/raw/<step>.json`` (``{"title", "rows"}`` as the benchmarks' ``--json``
writes) and ``OUT_DIR/raw/gpu-tests.xml`` (pytest's JUnit XML). The Markdown file holds a table of
the steps, then each step's table as its script printed it; a step without rows shows the tail
of its log (``OUT_DIR/logs/<step>.log``).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from dm2gal.io.store import atomic_write_text

TIMEOUT = {"124", "137"}  # timeout's status, and SIGKILL after its grace period
LOG_TAIL = 15


def status_word(status: str) -> str:
    if status == "skipped":
        return "skipped (budget spent)"
    if status == "0":
        return "ok"
    return "timed out" if status in TIMEOUT else f"failed (exit {status})"


def junit_rows(xml: Path) -> list[dict[str, str]]:
    """One row per test case of a JUnit XML file: test, outcome, seconds, message."""
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = word, (node.get("message") or "").split("\n")[0]
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        rows.append(
            {
                "test": name,
                "outcome": outcome,
                "s": f"{float(case.get('time', 0)):.2f}",
                "message": message,
            }  # fmt: skip
        )
    return rows


def step_tables(out: Path, name: str) -> tuple[str, list[dict[str, str]]]:
    """The title and rows a step left under ``out/raw`` (none: ``"", []``)."""
    raw = out / "raw"
    if (raw / f"{name}.json").exists():
        table = json.loads((raw / f"{name}.json").read_text())
        return table["title"], table["rows"]
    if (raw / f"{name}.xml").exists():
        return "pytest -m gpu", junit_rows(raw / f"{name}.xml")
    return "", []


def markdown_table(rows: list[dict[str, str]]) -> list[str]:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines


def commit() -> str:
    """The checked-out commit (with ``+dirty`` for local changes), or ``unknown``."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    try:
        sha, dirty = (
            subprocess.run([*git, *cmd], capture_output=True, text=True, check=True).stdout.strip()
            for cmd in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "-uno"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="gpu_check.sh's output folder")
    parser.add_argument("--budget", type=float, required=True, help="time budget, s")
    parser.add_argument("--seconds", type=float, required=True, help="time the steps took, s")
    parser.add_argument("--dry", action="store_true", help="GPU_CHECK_FORCE_CPU run")
    args = parser.parse_args()

    with open(args.out / "steps.tsv", newline="") as f:
        steps = list(csv.DictReader(f, delimiter="\t"))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    meta = {
        "device": device + (" (GPU_CHECK_FORCE_CPU: CPU steps, tiny sizes)" if args.dry else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "budget_s": args.budget,
        "seconds": args.seconds,
    }
    report = {**meta, "steps": []}
    md = [
        f"# GPU check: {meta['device']}",
        "",
        f"torch {meta['torch']}, Python {meta['python']}, commit {meta['commit']}, "
        f"{meta['date_utc']} UTC; {args.seconds:.0f} s of a {args.budget:.0f} s budget.",
        "",
        "| step | status | s | limit s | command |",
        "|---|---|---:|---:|---|",
    ]
    sections = []
    for step in steps:
        name, status = step["step"], status_word(step["status"])
        title, rows = step_tables(args.out, name)
        log = args.out / "logs" / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:] if log.exists() else []
        report["steps"].append(
            {
                **step,
                "status": status,
                "title": title,
                "rows": rows,
                "log_tail": [] if status == "ok" else tail,
            }  # fmt: skip
        )
        md.append(f"| {name} | {status} | {step['seconds']} | {step['limit_s']} | "
                  f"`{step['command']}` |")  # fmt: skip
        sections += ["", f"## {name}: {status}", ""]
        if rows:
            sections += [title, "", *markdown_table(rows)]
        if status != "ok" and tail:
            sections += ["", "```", *tail, "```"]
    atomic_write_text(args.out / "gpu_check.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / "gpu_check.md", "\n".join(md + sections) + "\n")
    print(f"gpu_check: {args.out / 'gpu_check.md'}, {args.out / 'gpu_check.json'}")
    print("\n".join(md))


if __name__ == "__main__":
    main()
