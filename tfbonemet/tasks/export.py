"""`tfbonemet export`: a run directory -> TF Serving SavedModel and TFLite flatbuffers, parity-checked, with a model card.

Layout (TF Serving): `<output_dir>/<model_name>/<version>/` holding the SavedModel, `tflite/*.tflite`,
`parity.json`, `metadata.json` and `MODEL_CARD.md`. A version is built in a hidden staging folder
beside it and renamed into place only after every artefact passed its parity check, so a serving
process never sees a half-written or out-of-tolerance model.

SavedModel signatures (preprocessing inside: the run's own ScanPreprocessor, as in training):
  serving_default  raw counts, float32 (B, H, W, 1), any H and W, inputs `anterior`+`posterior` or `image`
  serving_bytes    PNG/JPEG bytes, tf.string (B,), same input names (REST: {"b64": ...})
  preprocessed     normalised float32 (B, image_height, image_width, 1); the TFLite conversion source
All return `probabilities` (B, classes) float32 and `label` (B,) int64: for binary models
P(metastasis) >= the run's stored operating threshold, else the most probable class.

TFLite files take the `preprocessed` inputs (fixed size, values in [0, 1]); the full-integer file
takes int8 inputs and returns int8 probabilities, with scale and zero point in its tensor details.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.data import datasets
from tfbonemet.vocab import EXPORT_FORMATS, SPLITS
from tfbonemet.errors import ConfigError, ModelError
from tfbonemet.io.atomic import publish_dir, remove_stale, staging_dir, write_json, write_text
from tfbonemet.tasks.predict import METADATA_JSON, ModelInfo, SavedModelRunner, TFLiteRunner, model_inputs

FORMATS = EXPORT_FORMATS
TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
# Per format: (max |probability difference|, |AUC difference|, tie width), against the Keras model
# on the validation split. Float32 paths run the same ops (only fusion and summation order differ:
# ~1e-6); float16 weights carry 11-bit mantissas (~1e-3 on a probability); dynamic-range int8
# quantises weights per channel and activations per batch (~1e-2); full int8 also fixes activation
# ranges from calibration and outputs probabilities in steps of 1/256 (~0.004).
# The tie width is the probability gap a format cannot be expected to keep in order: the AUC bound
# grows by the share of positive/negative pairs the Keras model separates by less than it, and is
# never below one pair, 1/(positives * negatives), the finest change a validation split can show.
# A model with well-separated probabilities gets the AUC bound as listed.
TOLERANCES = {
    "savedmodel": (1e-4, 1e-3, 1e-6),
    "float32": (1e-4, 1e-3, 1e-6),
    "float16": (5e-3, 5e-3, 1e-3),
    "dynamic_int8": (0.05, 0.01, 0.01),
    "int8": (0.08, 0.01, 0.01),
}
SIGNATURES = ("serving_default", "serving_bytes", "preprocessed")


def build_archive(model, info: ModelInfo):
    """The Keras model wrapped in the three signatures, as a `keras.export.ExportArchive`."""
    import keras
    import tensorflow as tf

    preprocessor = info.preprocessor
    names = preprocessor.input_names
    view_of = dict(zip(names, info.data_views))
    height, width = preprocessor.image_size

    def outputs(x):
        probabilities = tf.cast(model(model_inputs(model, x), training=False), tf.float32)
        if info.threshold is not None and probabilities.shape[-1] == 2:
            label = tf.cast(probabilities[:, 1] >= info.threshold, tf.int64)
        else:
            label = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "label": label}

    def from_counts(features):
        return preprocessor({view_of[n]: features[n] for n in names})

    def serve(features):
        return outputs(from_counts(features))

    def serve_bytes(features):
        def one(encoded):
            counts = {n: tf.cast(tf.io.decode_image(encoded[n], channels=1, dtype=tf.uint16,
                                                    expand_animations=False), tf.float32) for n in names}
            return from_counts(counts)
        fixed = {n: tf.TensorSpec((height, width, 1), tf.float32) for n in names}
        return outputs(tf.map_fn(one, features, fn_output_signature=fixed))

    def spec(shape, dtype):
        return {n: tf.TensorSpec(shape, dtype, name=n) for n in names}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec((None, None, None, 1), tf.float32)])
    archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[spec((None,), tf.string)])
    archive.add_endpoint("preprocessed", outputs,
                         input_signature=[spec((None, height, width, 1), tf.float32)])
    return archive


def convert_tflite(saved_model: Path, variant: str, representative=None) -> bytes:
    """One TFLite variant of the `preprocessed` signature (from_saved_model: from_keras_model fails on Keras 3)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["preprocessed"])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # calibration runs TF's own deprecated interpreter
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def representative_dataset(run, samples: int, seed: int = 0):
    """Calibration inputs for full-integer quantisation: training studies through the run's preprocessor."""
    train = datasets.open_split(run.config, "train")
    if len(train) == 0:
        raise ConfigError("no training studies to calibrate the int8 model on")
    chosen = set(np.random.default_rng(seed).permutation(len(train))[:samples].tolist())

    def generate():
        for index, study in train.raw_studies(run.preprocessor.source_views):
            if index in chosen:
                yield {name: x[np.newaxis] for name, x in run.preprocessor.numpy(study).items()}
    return generate


def parity(name: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict:
    """Max |Δp| and ΔAUC of an artefact against the Keras model, and whether both are within tolerance."""
    max_abs = float(np.max(np.abs(reference - candidate)))
    auc_ref = metrics_lib.classification_metrics(labels, reference)["auc"]
    auc = metrics_lib.classification_metrics(labels, candidate)["auc"]
    delta = 0.0 if np.isnan(auc_ref) and np.isnan(auc) else float(auc - auc_ref)
    tol_p, tol_auc, tie = TOLERANCES[name]
    if reference.shape[1] == 2 and 0 < labels.sum() < len(labels):
        gaps = np.abs(reference[labels == 1, 1][:, None] - reference[labels == 0, 1][None, :])
        tol_auc = max(tol_auc + float(np.mean(gaps <= tie)), 1.0 / gaps.size)
    # a bound this loose (or no AUC at all) cannot fail: say the AUC was not checked instead of passing it
    auc_checked = bool(np.isfinite(auc_ref) and tol_auc < 0.1)
    return {"max_abs_diff": max_abs, "auc_keras": float(auc_ref), "auc": float(auc), "auc_diff": delta,
            "tolerance": {"max_abs_diff": tol_p, "auc_diff": tol_auc}, "n": int(len(labels)),
            "auc_checked": auc_checked,
            "passed": bool(max_abs <= tol_p and (not auc_checked or abs(delta) <= tol_auc))}


def parity_table(results: dict) -> str:
    lines = [f"{'artefact':<14}{'max|Δp|':>10}{'ΔAUC':>9}{'tolerance':>18}  result"]
    for name, r in results.items():
        tol = f"{r['tolerance']['max_abs_diff']:g} / {r['tolerance']['auc_diff']:.3g}"
        verdict = "ok" if r["passed"] else "FAILED"
        if r["passed"] and not r["auc_checked"]:
            verdict = "ok (probabilities only: the validation split is too small or one-class to check AUC)"
        lines.append(f"{name:<14}{r['max_abs_diff']:>10.2e}{r['auc_diff']:>+9.4f}{tol:>18}  {verdict}")
    return "\n".join(lines)


def next_version(root: Path) -> int:
    return max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0) + 1


def _model_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def export(run_dir, output_dir="saved_models", fmt: str = "all", model_name: str | None = None,
           calibration_samples: int = 100, log=print) -> Path:
    """Export a run; returns the new version directory. Raises ModelError (and writes nothing) on failed parity."""
    from tfbonemet.run import Run

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = Run.load(run_dir)
    info = ModelInfo(run.preprocessor, run.classes, run.threshold)
    root = Path(output_dir) / _model_name(model_name or run.model.name)
    staging = staging_dir(root, ".export.")  # TF Serving skips non-numeric names
    for stale in remove_stale(root, ".export*"):
        log(f"Removed {stale.name}, left by an export that was killed")
    try:
        _build(run, info, staging, fmt, calibration_samples, log)
        target = publish_dir(staging, root / str(next_version(root)))
        log(f"Exported version {target.name} to {target}")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if root.exists() and not any(root.iterdir()):
            root.rmdir()


def _build(run, info: ModelInfo, staging: Path, fmt: str, calibration_samples: int, log) -> None:
    """Everything of one version, written into `staging`; raises before the rename if parity fails.

    Parity feeds the same raw validation studies to every artefact: the SavedModel gets raw counts
    (its own preprocessing), Keras and TFLite get the run's preprocessor output.
    """
    from tfbonemet.tasks.evaluate import predict_split

    p = info.preprocessor
    log(f"Exporting {run.model.name} ({', '.join(p.input_names)}; {p.image_size[0]}x{p.image_size[1]}, "
        f"{p.normalisation}, crop {p.crop}) as {fmt}")
    build_archive(run.model, info).write_out(str(staging), verbose=False)
    card = model_card_metadata(run, info)
    write_json(staging / METADATA_JSON, card)
    reference = predict_split(run, "validation", log=lambda *_: None)
    labels = reference.labels
    studies = [study for _, study in datasets.open_split(run.config, "validation").raw_studies(p.source_views)]
    results = {}
    if fmt in ("savedmodel", "all"):
        log("Checking the SavedModel against Keras ...")
        candidate = SavedModelRunner(staging).predict(studies)
        results["savedmodel"] = parity("savedmodel", reference.probabilities, candidate, labels)
    if fmt in ("tflite", "all"):
        x = {name: np.stack([p.numpy(study)[name] for study in studies]) for name in p.input_names}
        (staging / "tflite").mkdir()
        calibration = representative_dataset(run, calibration_samples, run.config.seed)
        for variant in TFLITE_VARIANTS:
            log(f"Converting and checking TFLite {variant} ...")
            path = staging / "tflite" / f"{variant}.tflite"
            path.write_bytes(convert_tflite(staging, variant, calibration))
            results[variant] = parity(variant, reference.probabilities,
                                      TFLiteRunner(path, info).predict_preprocessed(x), labels)
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
    write_json(staging / METADATA_JSON, card)
    write_text(staging / "MODEL_CARD.md", render_model_card(card))


def _artefacts(staging: Path, fmt: str) -> dict:
    out = {}
    if fmt in ("savedmodel", "all"):
        out["savedmodel"] = {"path": ".", "signatures": list(SIGNATURES)}
    for path in sorted((staging / "tflite").glob("*.tflite")):
        out[f"tflite_{path.stem}"] = {"path": f"tflite/{path.name}", "bytes": path.stat().st_size}
    return out


SHIPPED_NOT = ("output_dir", "run_name", "data", "data_dir", "manual_dir", "init_backbone")  # paths stay home
INTENDED_USE = ("Research and clinical decision support: flags whole-body bone scintigraphy studies for a "
                "nuclear-medicine physician's review. Not a stand-alone diagnosis; every result must be read "
                "by a qualified physician together with the images and the clinical history.")
PHANTOM_LIMITATION = ("Trained on the built-in synthetic phantom set: it has never seen a patient's scan and "
                      "its figures say nothing about clinical performance.")
LIMITATIONS = (
    "Planar Tc-99m bisphosphonate whole-body views only; not validated for SPECT, other tracers or paediatric scans.",
    "Degenerative disease, fractures and injection artefacts can look like metastases and the reverse.",
    "Probabilities are not calibrated for a new site or camera; re-check the operating point locally.",
    "Quantised TFLite variants trade a little agreement with the Keras model for speed (see parity).",
)


def model_card_metadata(run, info: ModelInfo) -> dict:
    """A MONAI-bundle-style description a machine can read; counts only, no patient identifiers."""
    p = info.preprocessor
    names = p.input_names
    raw = {"type": "image", "format": "counts", "modality": "NM", "num_channels": 1, "spatial_shape": ["*", "*"],
           "dtype": "float32", "value_range": [0, 65535], "is_patch_data": False, "channel_def": {"0": "counts"}}
    classes = {str(i): c for i, c in enumerate(info.classes)}
    return {
        "name": run.model.name,
        "task": run.config.task,
        "description": "Bone-metastasis classifier for whole-body bone scintigraphy (anterior + posterior views)"
                       if p.views == "two_view" else "Bone-metastasis classifier for a single planar bone-scan view",
        "network_data_format": {
            "inputs": {n: {**raw, "view": view, "mirrored_inside": view == "posterior"}
                       for n, view in zip(names, info.data_views)},
            "outputs": {
                "probabilities": {"type": "probabilities", "format": "classes", "num_channels": len(info.classes),
                                  "spatial_shape": [], "dtype": "float32", "value_range": [0, 1],
                                  "channel_def": classes},
                "label": {"type": "class_index", "dtype": "int64", "channel_def": classes}},
            "tflite_inputs": {n: {"dtype": "float32 (int8 in tflite/int8.tflite)", "value_range": [0, 1],
                                  "spatial_shape": list(p.image_size), "num_channels": 1}
                              for n in names},
        },
        **info.to_json(),
        "operating_point": run.metrics.get("operating_point", {"threshold": info.threshold}),
        "training_data": training_summary(run),
        "training": {k: v for k, v in dataclasses.asdict(run.config).items() if k not in SHIPPED_NOT},
        "metrics": run_metrics(run.path),
        "intended_use": INTENDED_USE,
        "limitations": [PHANTOM_LIMITATION] * (run.config.data == "phantom") + list(LIMITATIONS),
    }


def training_summary(run) -> dict:
    out = {"source": "built-in synthetic phantom" if run.config.data == "phantom" else "user dataset",
           "split": "by patient (salted hash), stratified by label", "splits": {}}
    for split in SPLITS:
        studies = datasets.open_split(run.config, split)
        counts = np.bincount(studies.task_labels(run.config.task), minlength=len(run.classes))
        out["splits"][split] = {"studies": len(studies), "patients": int(len(np.unique(studies.patients))),
                                "per_class": dict(zip(run.classes, counts.tolist()))}
    return out


def run_metrics(run_dir: Path | None) -> dict:
    """Validation figures from training, plus each `eval-*/metrics.json` (figures with 95% CIs)."""
    if run_dir is None:
        return {}
    out = {}
    path = run_dir / "metrics.json"
    if path.is_file():
        m = json.loads(path.read_text())
        out["validation (training run)"] = {k: m[k] for k in ("accuracy", "precision", "recall", "specificity",
                                                               "f1", "auc", "n") if k in m}
    for path in sorted(run_dir.glob("eval-*/metrics.json")):
        m = json.loads(path.read_text())
        figures = (m.get("thresholds", {}).get("default", {}).get("figures") or m.get("averages")
                   or m.get("summary", {}))
        out[f"{m.get('split', path.parent.name)} (evaluation)"] = {"n": m.get("n_studies"), **figures}
    return out


def figure_text(value) -> str:
    if isinstance(value, dict) and "value" in value:
        low, high = value.get("ci95", (None, None))
        return f"{value['value']:.3f}" + (f" (95% CI {low:.3f}–{high:.3f})" if low is not None else "")
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_model_card(card: dict) -> str:
    """MODEL_CARD.md from the metadata, so the two never disagree."""
    lines = [f"# Model card: {card['name']}", "", card["description"] + ".", "",
             "## Intended use", "", card["intended_use"], "", "## Inputs", ""]
    for name, spec in card["network_data_format"]["inputs"].items():
        lines.append(f"- `{name}`: {spec['modality']} {spec['view']} view, {spec['num_channels']} channel, any "
                     f"height x width, {spec['dtype']} counts in [0, 65535]"
                     + (" (as acquired; mirrored inside the model)" if spec["mirrored_inside"] else ""))
    pre = card["preprocessing"]
    mirrored = "posterior mirrored, " if pre["mirror_posterior"] else ""
    lines += ["", f"Inside the SavedModel: {mirrored}resized with padding to {pre['image_size'][0]}x"
              f"{pre['image_size'][1]}, counts divided by the {pre['percentile']}th percentile and "
              f"`{pre['normalisation']}`-compressed to [0, 1]. TFLite files take that preprocessed tensor.",
              "", "## Outputs", "",
              f"- `probabilities`: float32, one per class ({', '.join(card['classes'])})",
              "- `label`: int64 class index" + (f": metastasis when P(metastasis) >= {card['threshold']:.3f}, the "
                                                 f"operating threshold chosen on validation "
                                                 f"({card['operating_point'].get('rule', 'default')})"
                                                 if card.get("threshold") is not None else " of the most probable class"),
              "", "## Training data", ""]
    data = card["training_data"]
    lines.append(f"{data['source']}; split {data['split']}.")
    lines += ["", "| split | studies | patients | " + " | ".join(card["classes"]) + " |",
              "|---|---|---|" + "---|" * len(card["classes"])]
    for split, s in data["splits"].items():
        lines.append(f"| {split} | {s['studies']} | {s['patients']} | "
                     + " | ".join(str(s["per_class"][c]) for c in card["classes"]) + " |")
    lines += ["", "## Metrics", ""]
    for source, figures in card["metrics"].items() or [("none", {})]:
        lines.append(f"- {source}: " + (", ".join(f"{k} {figure_text(v)}" for k, v in figures.items())
                                        or "no figures recorded"))
    lines += ["", "## Export parity (validation split, against the Keras model)", "",
              "| artefact | max abs Δp | ΔAUC | tolerance (Δp / ΔAUC) |", "|---|---|---|---|"]
    for name, r in card.get("parity", {}).items():
        lines.append(f"| {name} | {r['max_abs_diff']:.2e} | {r['auc_diff']:+.4f} | "
                     f"{r['tolerance']['max_abs_diff']:g} / {r['tolerance']['auc_diff']:.3g} |")
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]] + [""]
    return "\n".join(lines)
