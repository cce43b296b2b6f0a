"""Every command shown in README.md and docs/**/*.md works as written.

Each ```bash block is extracted. Its ``python train.py ...`` lines (one job per value of every
swept key, ``-m`` and ``hparams_search`` alike) are composed with Hydra and their data module,
network, loss and trainer built, without fitting or generating data; ``python evaluate.py ...``
lines are composed and their evaluation settings built; ``python -m dm2gal.<command> ...`` lines
compose their command's config. A block preceded by ``<!-- compose-only -->`` (it needs files
a test cannot have) is composed only. The site itself builds with ``mkdocs build --strict``.
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from dm2gal.eval.evaluation import EvaluationSettings
from dm2gal.train.build import build, compose_train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
COMPOSE_ONLY = "<!-- compose-only -->"
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve"}
MAX_FULL_GRID = 12  # sweeps with more jobs are covered value by value (every value once)
FENCE = re.compile(r"^```(\w*)\s*$")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
PLACEHOLDER = re.compile(r"<[^<>]+>")  # <run>, <date>: what the reader fills in


@dataclass(frozen=True)
class DocCommand:
    """One documented command line: where it is shown, its words and whether it is compose-only."""

    page: str
    line: int
    words: tuple[str, ...]
    compose_only: bool

    @property
    def entry(self) -> str:
        """``train``, ``evaluate`` or the ``dm2gal.<command>`` module it runs."""
        if self.words[1] == "-m":
            return self.words[2]
        return Path(self.words[1]).stem

    @property
    def arguments(self) -> list[str]:
        return list(self.words[3:] if self.words[1] == "-m" else self.words[2:])

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def bash_blocks(text: str) -> list[tuple[int, list[str], bool]]:
    """(first line number, lines, compose-only) of every ```bash block of a Markdown page."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if match and match.group(1) == "bash":
            before = [line.strip() for line in lines[:i] if line.strip()]
            marked = bool(before) and before[-1] == COMPOSE_ONLY
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 2, lines[i + 1 : end], marked))
            i = end
        i += 1
    return blocks


def shell_commands(words: list[str]) -> list[list[str]]:
    """Split a line's words at ``&&``, ``;`` and ``|``, dropping ``do`` / ``then`` before a
    command; a ``--wrap "<command>"`` (sbatch) is a command of its own."""
    commands, current = [], []
    for word in [*words, ";"]:
        if word in ("&&", ";", "|", "||"):
            if current:
                commands.append(current)
            current = []
        elif not current and word in ("do", "then", "else"):
            continue
        else:
            current.append(word)
    for command in list(commands):
        for flag, value in itertools.pairwise(command):
            if flag == "--wrap":
                commands.extend(shell_commands(split_line(value)))
    return commands


def split_line(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def expand(words: list[str], variables: dict[str, str]) -> list[str]:
    return [VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), w) for w in words]


def documented_commands(page: Path) -> list[DocCommand]:
    """The entry-point commands of every bash block of ``page``, continuation lines joined and
    shell variables (``export X=...``, ``for x in a b``: its first value) and placeholders
    (``<run>``) substituted."""
    found = []
    for start, lines, marked in bash_blocks(page.read_text()):
        variables: dict[str, str] = {}
        logical, first = "", start
        for offset, line in enumerate(lines):
            if not logical:
                first = start + offset
            logical += line.rstrip()
            if logical.endswith("\\"):
                logical = logical[:-1] + " "
                continue
            for words in shell_commands(split_line(PLACEHOLDER.sub("placeholder", logical))):
                if words[0] == "export" and "=" in words[1]:
                    key, value = words[1].split("=", 1)
                    variables[key] = value
                elif words[0] == "for" and len(words) > 3 and words[2] == "in":
                    variables[words[1]] = words[3]
                words = expand(words, variables)
                if is_entry(words):
                    rel = page.relative_to(ROOT).as_posix()
                    found.append(DocCommand(rel, first, tuple(words), marked))
            logical = ""
    return found


def is_entry(words: list[str]) -> bool:
    if len(words) >= 2 and words[0] == "python" and words[1] in ("train.py", "evaluate.py"):
        return True
    return len(words) >= 3 and words[:2] == ["python", "-m"] and words[2].startswith("dm2gal.")


COMMANDS = [command for page in PAGES for command in documented_commands(page)]


def split_flags(arguments: list[str]) -> tuple[list[str], bool, bool]:
    """Overrides, whether ``-m`` was given and whether a Hydra flag (``--cfg job``, ``--help``)
    makes the command print instead of run."""
    overrides, multirun, prints = [], False, False
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word in ("-m", "--multirun"):
            multirun = True
        elif word in HYDRA_FLAGS:
            prints, skip = True, word in ("--cfg", "-c")
        else:
            overrides.append(word)
    return overrides, multirun, prints


def sweep_values(override: str) -> list[str]:
    """``key=value`` for each value a sweep override takes (an interval: its two ends)."""
    parsed = OverridesParser.create().parse_override(override)
    key = parsed.get_key_element()
    if not parsed.is_sweep_override():
        return [override]
    if parsed.is_interval_sweep():
        sweep = parsed.value()
        return [f"{key}={sweep.start}", f"{key}={sweep.end}"]
    return [f"{key}={value}" for value in parsed.sweep_string_iterator()]


def jobs(dimensions: list[list[str]]) -> list[list[str]]:
    """Every combination of the sweep's values when few, else every value once."""
    if math.prod(len(d) for d in dimensions) <= MAX_FULL_GRID:
        return [list(job) for job in itertools.product(*dimensions)]
    width = max(len(d) for d in dimensions)
    return [[d[i % len(d)] for d in dimensions] for i in range(width)]


def train_jobs(overrides: list[str]) -> list[tuple[list[str], DictConfig | None]]:
    """The overrides of each job a ``python train.py`` line starts, the swept keys of the
    command line and of its ``hparams_search`` config alike, each with its composed config
    when that is already at hand (a line that sweeps nothing)."""
    dimensions = [sweep_values(o) for o in overrides]
    fixed = [d[0] for d in dimensions if len(d) == 1]
    cfg = compose_train(fixed, hydra_node=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    given = {o.split("=", 1)[0] for o in overrides}
    dimensions += [sweep_values(f"{k}={v}") for k, v in params.items() if k not in given]
    if all(len(d) == 1 for d in dimensions):
        return [(fixed, cfg)]
    return [(job, None) for job in jobs(dimensions)]


def tiny_outputs(cfg, tmp_path: Path) -> None:
    """Write under ``tmp_path``; on a machine without a GPU, build the trainer on the CPU."""
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.log_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
        del cfg.hydra
        if not torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("gpu", "cuda"):
            cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
            cfg.trainer.sync_batchnorm = False


def primary_config(module: str) -> tuple[Path, str]:
    """The config directory and name of the ``@hydra.main`` of ``python -m <module>``."""
    path = ROOT / Path(*module.split("."))
    source = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "hydra.main":
            keywords = {k.arg: k.value.value for k in node.keywords}
            return (source.parent / keywords["config_path"]).resolve(), keywords["config_name"]
    raise AssertionError(f"{source}: no @hydra.main(config_path=..., config_name=...)")


def compose_command(name: str, overrides: list[str], config_dir: Path = CONF):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=overrides)


def check_train(command: DocCommand, overrides: list[str], tmp_path: Path) -> None:
    for job, composed in train_jobs(overrides):
        cfg = composed or compose_train(job, hydra_node=True)
        if command.compose_only:
            continue
        tiny_outputs(cfg, tmp_path)
        datamodule, module, trainer = build(cfg)
        assert datamodule.crop == cfg.data.crop and module.net is not None and trainer is not None


def check_evaluate(overrides: list[str]) -> None:
    cfg = compose_command("evaluate", overrides)
    assert cfg.run_dir is not None or cfg.ckpt_path is not None
    given = {k: v for k, v in OmegaConf.to_container(cfg.evaluation).items() if v is not None}
    defaults = OmegaConf.load(CONF / "evaluation" / "default.yaml")
    EvaluationSettings.from_config(OmegaConf.merge(defaults, given))


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command(command: DocCommand, tmp_path: Path) -> None:
    overrides, _, prints = split_flags(command.arguments)
    if command.entry == "train":
        check_train(command, overrides, tmp_path) if not prints else compose_train(overrides)
    elif command.entry == "evaluate":
        check_evaluate(overrides)
    else:
        config_dir, name = primary_config(command.entry)
        for job in jobs([sweep_values(o) for o in overrides]):
            compose_command(name, job, config_dir)


def test_every_page_has_commands_found() -> None:
    """The extraction sees the README's set-up commands and the sweep line (one per job)."""
    readme = [c for c in COMMANDS if c.page == "README.md"]
    assert any(c.words == ("python", "train.py") for c in readme)
    sweeps = [c for c in COMMANDS if "-m" in c.arguments and c.entry == "train"]
    assert sweeps and any(len(train_jobs(split_flags(c.arguments)[0])) > 1 for c in sweeps)


def test_readme_setup_commands_match_ci() -> None:
    """The README's test command is what .ci/run runs; the other one ends by training on the
    mock; the README stays short and keeps the markers the lead updates."""
    text = (ROOT / "README.md").read_text()
    setup = [lines[0] for _, lines, _ in bash_blocks(text)[:2]]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert setup[1] == ci[-1] and setup[1].endswith("&& pytest")
    assert setup[0] == setup[1].replace('-e ".[dev]" && pytest', "-e . && python train.py")
    assert len(text.splitlines()) <= 200
    for marker in ("results-table", "speed-table"):
        assert text.count(f"<!-- {marker} -->") == text.count(f"<!-- /{marker} -->") == 1


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (warnings are errors: broken links, missing pages, API pages
    whose modules cannot be read) into a temporary site directory."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    assert "FieldDataModule" in api and "EvaluationSettings" in api
    assert not (ROOT / "site").exists()


def package_imports() -> dict[str, set[str]]:
    """``{package: the other dm2gal packages / top-level modules it imports}``."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "dm2gal").rglob("*.py"):
        own = path.relative_to(ROOT / "dm2gal").with_suffix("").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "dm2gal" and len(parts) > 1 and parts[1] != own:
                    found.setdefault(own, set()).add(parts[1])
    return found


def test_architecture_page_lists_every_import() -> None:
    """Each package row of docs/architecture.md names every dm2gal package it imports."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    imports, checked = package_imports(), set()
    for row in rows:
        if "everything" in row[-1]:
            continue
        documented = {name.split(".")[0] for name in re.findall(r"`([\w.]+)`", row[-1])}
        for package in re.findall(r"`(\w+)/?`", row[0]):
            assert imports.get(package, set()) <= documented, (package, row[-1])
            checked.add(package)
    assert {"io", "data", "train", "sweep"} <= checked


def test_readme_links_point_at_pages() -> None:
    """Every relative link of the README (which MkDocs does not build) names an existing file."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local and all((ROOT / link).is_file() for link in local), local
