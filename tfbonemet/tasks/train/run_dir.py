"""The run directory: created once under output_dir, and the history and backups a resume reads."""
from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

from tfbonemet.config import FitConfig
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import make_dir, write_text

FINISHED = ("model.keras", "metrics.json")


def make_run_dir(config: FitConfig) -> Path:
    """Create a fresh run directory under output_dir, failing clearly if that is not possible."""
    root = make_dir(config.output_dir)
    name = config.run_name or f"{dt.datetime.now():%Y%m%d-%H%M%S}-{config.model}"
    run_dir = root / name
    try:
        make_dir(run_dir, exist_ok=False)
    except FileExistsError:
        raise ConfigError(f"run directory {run_dir} already exists; choose another --run-name "
                          f"or continue it with --resume {run_dir}") from None
    return run_dir


def read_history(path: Path, before_epoch: int, rewrite: bool = True) -> list[dict]:
    """history.csv rows of epochs before `before_epoch`, rewriting the file without later rows
    (unless `rewrite` is False: non-chief workers only read).

    A run killed after logging an epoch but before backing it up repeats that epoch on resume;
    dropping its row keeps one row per epoch.
    """
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [row for row in rows if int(row["epoch"]) < before_epoch]
    if rewrite and len(kept) != len(rows):
        lines = []
        if kept:
            fields = list(kept[0])
            lines = [",".join(fields)] + [",".join(str(row[f]) for f in fields) for row in kept]
        write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return kept


def unfinished_run(run_dir: Path, config_json: str) -> bool:
    """Whether `run_dir` is an unfinished run started with exactly this configuration."""
    saved = run_dir / "config.json"
    return (saved.exists() and saved.read_text() == config_json
            and not all((run_dir / name).exists() for name in FINISHED))


def backed_up_epoch(backup_dir: Path) -> int | None:
    """Epochs finished according to a BackupAndRestore directory (None if there is no backup)."""
    meta = backup_dir / "training_metadata.json"
    return json.loads(meta.read_text())["epoch"] if meta.exists() else None
