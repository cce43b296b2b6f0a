"""``python -m dm2gal.download``: fetch IllustrisTNG snapshots and catalogues (conf/download.yaml).

    export TNG_API_KEY=...     # from your account page on the TNG website
    python -m dm2gal.download dest=/data/TNG100 dry_run=true
    python -m dm2gal.download dest=/data/TNG100 products=[dark_dm,groups,stars] workers=8
    python -m dm2gal.fields data=tng100 data.root=/data/TNG100

The work is done by :mod:`dm2gal.io.download`; an interrupted run resumes when run again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dm2gal.cli import reports_user_errors
from dm2gal.errors import ConfigError
from dm2gal.io import download as dl

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[dl.RemoteFile]:
    """List (and unless ``cfg.dry_run``, download) ``cfg.products``; return the files."""
    unknown = [p for p in cfg.products if p not in cfg.catalog]
    if unknown:
        raise ConfigError(f"config key 'products': {unknown} not in catalog {list(cfg.catalog)}")
    api_key = os.environ.get(cfg.api_key_env)
    if not api_key:
        raise dl.DownloadError(
            f"environment variable {cfg.api_key_env} (config key 'api_key_env') is not set: "
            "export your TNG API key"
        )
    backoff = dl.Backoff(**cfg.backoff)
    session = dl.session(api_key, cfg.base_url, backoff)
    dest = Path(cfg.dest).expanduser().resolve()
    requests_ = dl.as_requests(r for p in cfg.products for r in cfg.catalog[p])
    files = dl.plan(
        session, cfg.base_url, requests_, cfg.snapshot, dest, cfg.output, cfg.workers,
        backoff.timeout,
    )  # fmt: skip
    print(dl.summary(files, dest))
    if not cfg.dry_run:
        dl.download(session, files, cfg.workers, backoff, cfg.progress, cfg.chunk_bytes)
        log.info("%d files complete under %s", len(files), dest)
    return files


@hydra.main(version_base="1.3", config_path="../conf", config_name="download")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``python -m dm2gal.download``."""
    run(cfg)


if __name__ == "__main__":
    main()
