"""The run directory: created once under output_dir, and the history and backups a resume reads."""
from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path

from tfbonemet.config import FitConfig
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import PART, make_dir, remove_stale, write_text
from tfbonemet.io.lock import unless_held

FINISHED = ("model.keras", "metrics.json")
RUN_LOCK = ".tfbonemet.lock"  # held while a process trains into the run directory


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


def epoch_finished(run_dir: Path) -> bool:
    """Whether the run has finished an epoch (history.csv, which training opens at its start, has a row)."""
    try:
        with (Path(run_dir) / "history.csv").open() as fh:
            return sum(1 for line in fh if line.strip()) > 1
    except OSError:
        return False


def backed_up_epoch(backup_dir: Path) -> int | None:
    """Epochs finished according to a BackupAndRestore directory (None if there is no backup)."""
    meta = backup_dir / "training_metadata.json"
    return json.loads(meta.read_text())["epoch"] if meta.exists() else None


def tidy(run_dir: Path, keep_best: bool = False) -> list[str]:
    """Remove what training leaves while it runs: best.keras and backup/ (unless `keep_best`: the run is
    not finished) and the temporary files of a killed process; returns the names removed."""
    removed = [stale.name for stale in remove_stale(run_dir, f".*{PART}*")]
    if not keep_best:
        for path in (run_dir / "best.keras", run_dir / "backup"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"{path.name}/")
            elif path.exists():
                path.unlink()
                removed.append(path.name)
    return removed


def sweep_runs(folder, log=print) -> list[str]:
    """Tidy the run directories in `folder` (and the folds of a cross-validation there), or `folder` itself
    when it is a run directory: what a killed fit left (its temporary saves; best.keras and backup/ once
    the run has finished) goes, but only from runs that no live process holds. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = [folder] if (folder / "config.json").exists() else [
        path.parent for pattern in ("*/config.json", "*/fold-*/config.json") for path in sorted(folder.glob(pattern))]
    removed = []
    for lock in sorted(folder.glob(f"*/{RUN_LOCK}")):  # a run folder a process killed before it wrote anything
        if sorted(lock.parent.iterdir()) == [lock]:
            with unless_held(lock) as free:
                pass
            if free and not any(lock.parent.iterdir()):
                lock.parent.rmdir()
                removed.append(str(lock.parent))
                log(f"Removed {lock.parent}, an empty run folder left by a fit that was killed")
    for run_dir in runs:
        finished = all((run_dir / name).exists() for name in FINISHED)
        left = any(run_dir.glob(f".*{PART}*")) or (finished and any(
            (run_dir / name).exists() for name in ("best.keras", "backup")))
        if not left:
            continue
        with unless_held(run_dir / RUN_LOCK) as free:
            if free:
                names = tidy(run_dir, keep_best=not finished)
                if names:
                    log(f"Removed {', '.join(names)} from {run_dir}, left by a fit that was killed")
                removed += [str(run_dir / name) for name in names]
    return removed


def sweep_run(run, log=print) -> list[str]:
    """`sweep_runs` for one run directory; nothing for anything else (a .keras file, a folder of runs)."""
    return sweep_runs(run, log) if (Path(run) / "config.json").is_file() else []
