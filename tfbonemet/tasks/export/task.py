"""`tfbonemet export`: a run directory -> TF Serving SavedModel and TFLite flatbuffers, parity-checked,
with a model card and the sha256 of every file.

Layout (TF Serving): `<output_dir>/<model_name>/<version>/` holding the SavedModel, `tflite/*.tflite`,
`parity.json`, `metadata.json` and `MODEL_CARD.md`. A version is built in a hidden staging folder
beside it and renamed into place only after every artefact passed its parity check, so a serving
process never sees a half-written or out-of-tolerance model; staging folders a killed export left
are removed first.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tfbonemet.data import datasets
from tfbonemet.errors import ConfigError, ModelError
from tfbonemet.io.atomic import (make_dir, no_space, publish_dir, remove_stale, staging_dir, write_json,
                                 write_text)
from tfbonemet.io import integrity
from tfbonemet.io.lock import LOCK_SUFFIX, exclusive, sweep, unless_held
from tfbonemet.progress import stages
from tfbonemet.tasks.export import model_card, tflite
from tfbonemet.tasks.export.archive import SIGNATURES, build_archive
from tfbonemet.tasks.export.parity import parity, parity_table
from tfbonemet.tasks.export.versions import model_name as safe_name
from tfbonemet.tasks.export.versions import next_version, previous_card
from tfbonemet.io.integrity import METADATA_JSON
from tfbonemet.run import ModelInfo
from tfbonemet.tasks.predict import SavedModelRunner, TFLiteRunner
from tfbonemet.vocab import EXPORT_FORMATS as FORMATS


def export(run_dir, output_dir="saved_models", fmt: str = "all", model_name: str | None = None,
           calibration_samples: int = 100, release: model_card.Release = model_card.Release(), log=print) -> Path:
    """Export a run; returns the new version directory. Raises ModelError (and writes nothing) on failed parity."""
    from tfbonemet.run import Run

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = Run.load(run_dir)
    info = run.info
    root = Path(output_dir) / safe_name(model_name or run.model.name)
    sweep_exports(output_dir, log)
    # one export of a model at a time: the version number is chosen, and the folder renamed, under the lock
    with exclusive(make_dir(output_dir) / f".{root.name}.export{LOCK_SUFFIX}", f"export folder {root}"):
        for stale in remove_stale(root, ".export*"):
            log(f"Removed {stale.name}, left by an export that was killed")
        staging = staging_dir(root, ".export.")  # TF Serving skips non-numeric names
        try:
            _build(run, info, staging, fmt, calibration_samples, model_card.model_card_metadata(
                run, info, release, previous_card(root)), log)
            target = publish_dir(staging, root / str(next_version(root)))
            log(f"Exported version {target.name} to {target}")
            return target
        except Exception as exc:
            if no_space(exc):
                raise ConfigError(f"cannot write {root}: no space left on device; no version was written and the "
                                  f"earlier ones are intact") from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if root.exists() and not any(root.iterdir()):
                root.rmdir()


def sweep_exports(output_dir, log=print) -> None:
    """Remove what killed exports left under `output_dir`, of any model: staging folders (and a model folder
    left empty) where no export of that model runs, and lock files no process holds."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    for root in sorted({path.parent for path in output_dir.glob("*/.export.*")}):
        with unless_held(output_dir / f".{root.name}.export{LOCK_SUFFIX}") as free:
            if free:
                for stale in remove_stale(root, ".export.*"):
                    log(f"Removed {stale}, left by an export that was killed")
                if not any(root.iterdir()):
                    root.rmdir()
    sweep(output_dir, log)


def _build(run, info: ModelInfo, staging: Path, fmt: str, calibration_samples: int, card: dict, log) -> None:
    """Everything of one version, written into `staging`; raises before the rename if parity fails.

    Parity feeds the same raw validation studies to every artefact: the SavedModel gets raw counts
    (its own preprocessing), Keras and TFLite get the run's preprocessor output. "Keras" is the run's
    float32 serving model, which the SavedModel wraps whatever precision trained it. The TFLite files
    checked are the final ones, metadata included.
    """
    from tfbonemet.tasks.evaluate import predict_split

    p = info.preprocessor
    log(f"Exporting {run.model.name} {card['version']} ({', '.join(p.input_names)}; {p.image_size[0]}x"
        f"{p.image_size[1]}, {p.normalisation}, crop {p.crop}; trained in {run.training_precision}, served in "
        f"{run.serving_precision}) as {fmt}")
    artefacts = ["savedmodel"] * (fmt in ("savedmodel", "all")) + list(tflite.TFLITE_VARIANTS) * (fmt in ("tflite",
                                                                                                        "all"))
    reference = predict_split(run, "validation", log=lambda *_: None)
    labels = reference.labels
    studies = [study for _, study in datasets.open_split(run.config, "validation").raw_studies(p.source_views)]
    build_archive(run.predictor, info).write_out(str(staging), verbose=False)
    write_json(staging / METADATA_JSON, card)  # the SavedModel runner reads its preprocessing from it
    results = {}
    for name in stages(artefacts, "Exporting and checking against Keras", log):
        if name == "savedmodel":
            candidate = SavedModelRunner(staging).outputs(studies)
        else:
            x = {n: np.stack([p.numpy(study)[n] for study in studies]) for n in p.input_names}
            path = staging / "tflite" / f"{name}.tflite"
            path.parent.mkdir(exist_ok=True)
            calibration = tflite.representative_dataset(run, calibration_samples, run.config.seed)
            description = {k: card[k] for k in ("name", "version", "task", "classes", "threshold", "referral_band",
                                                "labels", "preprocessing")}
            description["inputs"] = card["network_data_format"]["tflite_inputs"]
            flatbuffer = tflite.convert_tflite(staging, name, calibration, source=run.path or run.model_path)
            path.write_bytes(tflite.with_metadata(flatbuffer, description))
            candidate = TFLiteRunner(path, info).outputs_preprocessed(x)
        results[name] = parity(name, reference.probabilities, candidate["probabilities"], labels,
                               (reference.uncertainty, candidate["uncertainty"]))
    log(f"Parity against Keras on {len(labels)} validation studies:\n{parity_table(results)}")
    failed = [name for name, r in results.items() if not r["passed"]]
    if failed:
        raise ModelError(f"export of {run.path or run.model.name} failed parity for {', '.join(failed)} "
                         f"(see the table above); no version was written")
    if fmt == "tflite":
        for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets"):
            target = staging / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    write_json(staging / "parity.json", {"split": "validation", "reference": "keras", "artefacts": results})
    card.update(artefacts=_artefacts(staging, fmt), parity=results)
    write_text(staging / "MODEL_CARD.md", model_card.render_model_card(card))
    card["integrity"] = integrity.record(staging)  # every file but metadata.json, which holds the digests
    write_json(staging / METADATA_JSON, card)


def _artefacts(staging: Path, fmt: str) -> dict:
    out = {}
    if fmt in ("savedmodel", "all"):
        out["savedmodel"] = {"path": ".", "signatures": list(SIGNATURES)}
    for path in sorted((staging / "tflite").glob("*.tflite")):
        out[f"tflite_{path.stem}"] = {"path": f"tflite/{path.name}", "bytes": path.stat().st_size}
    return out
