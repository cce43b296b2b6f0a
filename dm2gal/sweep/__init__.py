"""Multirun aggregation: one comparison table (CSV + Markdown) and a plot for a sweep.

``python -m dm2gal.sweep dir=<multirun_dir>`` (or :func:`aggregate`) reads every run directory of a
Hydra multirun folder: its overrides (``.hydra/overrides.yaml``), its final metrics
(``results.json`` written by :func:`dm2gal.train.pipeline.train`, else the last values of
``csv/metrics.csv``) and its test-region statistics (``evaluation/metrics.json``, as
``eval/<field>/<statistic>``, plus the network-minus-HOD margins ``eval/margin/<statistic>``)
when present. A run is ``ok`` when training completed, ``failed`` when it recorded an error or
left no metrics, ``incomplete`` when it has metrics but no result (still running, or killed).

Writes into the folder: ``sweep.csv`` (every column), ``sweep.md`` (the view to read: the swept
keys and the headline scores of :mod:`dm2gal.eval.headline`, runs sorted by each run's
``optimized_metric``, the HODs and the oracle once as reference rows) and ``sweep.png`` (every
run's P(k) ratio and r(k) over the references, and bars of the headline scores with the
references as lines). :func:`~dm2gal.sweep.wandb_log.log_to_wandb` logs the table to a W&B
run of the sweep's group. After an Optuna study (``hparams_search=optuna``) ``sweep.md`` ends
with its best trial.

Modules: :mod:`~dm2gal.sweep.runs` (one run directory -> one row), :mod:`~dm2gal.sweep.table`
(the table and its headline view), :mod:`~dm2gal.sweep.study` (Optuna's best trial),
:mod:`~dm2gal.sweep.plots`, :mod:`~dm2gal.sweep.wandb_log`, :mod:`~dm2gal.sweep.aggregation`
(all of it, into files) and ``__main__`` (the command).
"""

from dm2gal.sweep.aggregation import aggregate
from dm2gal.sweep.table import SweepTable

__all__ = ["SweepTable", "aggregate"]
