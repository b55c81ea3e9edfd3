"""The predict loop and its writers: studies stream through in batches, so memory is bounded by the batch
(and each view by tfbonemet.io.images.MAX_PIXELS), not by the folder.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tfbonemet.errors import DataError, ModelError
from tfbonemet.io.atomic import PART, make_dir, open_for_write, remove_stale
from tfbonemet.io.discovery import StudyFiles, load_study
from tfbonemet.io.lock import LOCK_SUFFIX, exclusive, sweep
from tfbonemet.vocab import PREDICTION_FORMATS

def iter_predictions(runner, studies: list[StudyFiles], batch_size: int = 16, secret: str | None = None,
                     skip_bad: bool = False, on_skip: Callable[[str], None] | None = None,
                     on_batch: Callable[[int], None] | None = None, explain_dir=None) -> Iterator[dict]:
    """One row per study (key, label or refer, class probabilities, uncertainty); reads and predicts
    `batch_size` studies at a time. `secret` keys the DICOM study pseudonyms (default: the site's secret).

    With `explain_dir`, each study also gets a Grad-CAM overlay `<key>-gradcam.png` there.
    """
    if explain_dir is not None:
        if runner.kind != "keras":
            raise ModelError(f"--explain needs the Keras model (run directory or .keras), not a {runner.kind} model")
        make_dir(explain_dir)
    classes, names = runner.info.classes, runner.info.label_names
    for start in range(0, len(studies), batch_size):
        batch, keys = [], []
        for study in studies[start:start + batch_size]:
            try:
                found = load_study(study, runner.info, secret)
            except DataError as exc:
                if not skip_bad:
                    raise
                (on_skip or (lambda m: print(f"skipped: {m}", file=sys.stderr)))(str(exc))
                continue
            keys += [key for key, _ in found]
            batch += [views for _, views in found]
        if batch:
            if explain_dir is not None:
                explain_batch(runner, keys, batch, Path(explain_dir))
            out = runner.outputs(batch)
            probabilities = out["probabilities"]
            for key, p, u, decided in zip(keys, probabilities, out["uncertainty"], runner.info.label(probabilities)):
                yield {"study": key, "label": names[int(decided)],
                       **{f"p_{c}": round(float(v), 6) for c, v in zip(classes, p)}, "uncertainty": round(float(u), 6)}
        if on_batch:
            on_batch(min(batch_size, len(studies) - start))


def explain_batch(runner, keys: list[str], studies: list[dict], out_dir: Path) -> None:
    """Grad-CAM overlays of the metastasis class (tfbonemet.explain), one study at a time: sizes may differ."""
    from tfbonemet.tasks import explain

    for key, result in zip(keys, explain.explain_studies(runner.run, studies, keys)):
        explain.save_png(result, out_dir / f"{key.replace('/', '__')}-gradcam.png", "gradcam")


def write_rows(rows: Iterable[dict], out, fmt: str, classes: tuple[str, ...]) -> int:
    """Stream rows to an open text file as CSV or a JSON list; returns the count."""
    if fmt not in PREDICTION_FORMATS:
        raise DataError(f"unknown output format {fmt!r}; choose one of {', '.join(PREDICTION_FORMATS)}")
    rows = iter(rows)
    first = next(rows, None)  # a bad first batch fails before anything is written
    rows = itertools.chain([first] if first is not None else [], rows)
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=["study", "label", *(f"p_{c}" for c in classes), "uncertainty"])
        writer.writeheader()
        for n, row in enumerate(rows, start=1):
            writer.writerow(row)
        return n
    out.write("[")
    for n, row in enumerate(rows, start=1):
        out.write(("\n  " if n == 1 else ",\n  ") + json.dumps(row))
    out.write("\n]\n")
    return n


@contextlib.contextmanager
def open_output(output: str | Path | None):
    """A text stream for the rows: standard output, or a file that appears complete or not at all.

    Missing parent folders are created; a folder that cannot be written is one clear error; a name
    that is not valid UTF-8 (a study key from such a file name) is written back as its own bytes.
    """
    if output is None:
        sys.stdout.flush()
        stream = sys.stdout if not hasattr(sys.stdout, "buffer") else io.TextIOWrapper(
            sys.stdout.buffer, encoding=sys.stdout.encoding or "utf-8", errors="surrogateescape", newline="",
            line_buffering=True)
        try:
            yield stream
        finally:
            stream.flush()
            if stream is not sys.stdout:
                stream.detach()
        return
    output = Path(output)
    if output.is_dir():
        raise DataError(f"{output}: is a folder; give a file name for the predictions")
    folder = make_dir(output.parent)
    sweep(folder)  # what killed runs left beside other files here
    with exclusive(folder / f".{output.name}{LOCK_SUFFIX}", f"predictions file {output}"):
        remove_stale(folder, f".{output.name}.*{PART}")
        with open_for_write(output, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
            yield fh
