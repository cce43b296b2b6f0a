"""Commands print a user error as one line on stderr and exit 1; bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError, UserError
from dm2gal.io.sources import SourceError

ROOT = Path(__file__).resolve().parents[1]


def _raising(err: BaseException):
    @reports_user_errors
    def task(cfg):
        raise err

    return task


def _instantiation_error() -> InstantiationException:
    try:
        try:
            raise SourceError("option 'grid' must be an integer, got 'x'")
        except SourceError as cause:
            raise InstantiationException("Error in call to target 'TNGSource'") from cause
    except InstantiationException as err:
        return err


def _missing() -> MissingMandatoryValue:
    try:
        OmegaConf.create({"data": {"root": "???"}}).data.root  # noqa: B018
    except MissingMandatoryValue as err:
        return err


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (ConfigError("config key 'data.crop' = 0 must be positive"), "config key 'data.crop' ="),
        (SourceError("a.npy: file not found (option 'dm')"), "a.npy: file not found (option 'dm')"),
        (_instantiation_error(), "option 'grid' must be an integer, got 'x'"),
        (_missing(), "Missing mandatory value: data.root"),
    ],
)
def test_a_user_error_is_one_line_and_status_1(capsys, monkeypatch, err, line):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as done:
        _raising(err)(OmegaConf.create())
    assert done.value.code == 1
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {line}") and printed.count("\n") == 1


def test_full_error_and_bugs_keep_the_exception(monkeypatch):
    with pytest.raises(RuntimeError, match="a bug"):
        _raising(RuntimeError("a bug"))(OmegaConf.create())
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError, match="a.npy"):
        _raising(SourceError("a.npy: file not found"))(OmegaConf.create())


COMMANDS = {
    "train.py": (["data=tng100", "data.root=/nonexistent"], "/nonexistent/TNG100-1-Dark/output"),
    "evaluate.py": (["run_dir=/nonexistent/run"], "/nonexistent/run"),
    "dm2gal.fields": (["data=fields", "data.dm=/nope.npy", "data.subhalo=/nope.npy",
                       "data.stellar=/nope.npy", "data.box=75"], "/nope.npy: file not found"),
    "dm2gal.predict": (["run_dir=/nonexistent/run"], "/nonexistent/run/.hydra/config.yaml"),
    "dm2gal.hod": (["data.crop=0"], "data.crop: expected an integer >= 1, got 0"),
    "dm2gal.sweep": (["dir=/nonexistent/sweep"], "/nonexistent/sweep"),
    "dm2gal.limits": (["runs=[/nonexistent/run]"], "/nonexistent/run/evaluation/realisations.json"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reports_a_user_error_in_one_line(tmp_path: Path, command: str):
    args, named = COMMANDS[command]
    script = [str(ROOT / command)] if command.endswith(".py") else ["-m", command]
    run = [sys.executable, *script, *args]
    if command not in ("dm2gal.predict", "dm2gal.sweep", "dm2gal.limits"):  # no paths group
        run += [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/src/dm2gal/hod/__main__.py", "python -m dm2gal.hod"),
        ("/home/me/dm2gal/dm2gal/predict.py", "python -m dm2gal.predict"),
        ("tool.py", "tool.py"),
    ],
)
def test_command_name_is_what_the_user_typed(monkeypatch, argv0: str, name: str):
    from dm2gal.cli import command_name

    monkeypatch.setattr(sys, "argv", [argv0])
    assert command_name() == name


@pytest.mark.parametrize("command", ["dm2gal.hod", "dm2gal.paint", "dm2gal.paint.compare"])
def test_help_names_the_command(command: str):
    """``--help`` of a ``python -m dm2gal.<command>`` app names it (Hydra says ``__main__``);
    ``dm2gal.paint`` composes its own config folder (conf/paint/)."""
    done = subprocess.run(
        [sys.executable, "-m", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"python -m {command}: a dm2gal command.")
