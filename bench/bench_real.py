"""Patient-level cross-validation of `tfbonemet fit` on real bone scans (a BS-80K-layout folder).

The development part of the public BS-80K right-chest crops (`../shared/realdata/README.md`) goes
through the package exactly as a user's data does: `tfbonemet data build` once, then
`tfbonemet cv --folds K` with `fit` defaults (plus `--fit-args` to try a recipe). Each fold trains
on the other folds, split by patient into train / validation as a data build splits (validation
picks the best epoch and the threshold), and is scored on its own fold. Printed: per fold and
pooled out-of-fold ROC AUC, PR AUC, F1 at each fold's stored threshold, patient-bootstrap 95 %
intervals, fit minutes per fold, and the machine's load.

With `--fit-args "--refer-coverage 0.85"` every fold also chooses a referral band on its own
validation studies: printed are the share of test studies answered and sensitivity and
specificity among the answered vs all studies, and ECE before and after each fold's temperature
(fitted on its validation). With `--seeds 0 1 2` the cross-validation runs once per seed (folds,
splits and weights all differ) and the members' out-of-fold probabilities are averaged per study
into a deep ensemble (each member's model never saw the study it scores); printed are one model
(the first seed) against the ensemble (ROC AUC, F1, the referral figures, ECE) and the cost of
each in fit minutes and prediction milliseconds per study, with and without the test-time shifts.

`--reference` trains the plain Keras net of bench_reference.py (`large`: two 3x3 convolutions per
stage 32-64-128, pixels/255, 160x64, class weights, 15 epochs, best epoch by validation AUC)
through the same folds and the same train / validation split, scored at 0.5.

  python bench/bench_real.py DEV_FOLDER --work /tmp/real                      # defaults
  python bench/bench_real.py DEV_FOLDER --work /tmp/real --name f32 --fit-args "--precision float32"
  python bench/bench_real.py DEV_FOLDER --work /tmp/real --reference
  python bench/bench_real.py DEV_FOLDER --work /tmp/real --name refer --seeds 0 1 2 --fit-args "--refer-coverage 0.85"
  python bench/bench_real.py PHANTOM_FOLDER --work /tmp/phantom --name f32 --fit-args "--precision float32"
  python bench/bench_real.py --rank /tmp/real /tmp/phantom     # does the phantom rank recipes as real CV does?
Never point it at held-out patients: every figure it prints steers the defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = "tfds:bone_scintigraphy/binary"


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def tfbonemet(*args: str, log: Path) -> float:
    """Run the CLI, its output to `log`; returns wall seconds, exits on failure."""
    start = time.time()
    with log.open("w") as fh:
        code = subprocess.call([str(Path(sys.executable).with_name("tfbonemet")), *args], stdout=fh,
                               stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"tfbonemet {' '.join(map(shlex.quote, args))} failed (exit {code}); see {log}")
    return time.time() - start


def build(dev: Path, work: Path) -> Path:
    tfds = work / "tfds"
    if not (tfds / "bone_scintigraphy").exists():
        tfbonemet("data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", str(dev), "--data-dir",
                  str(tfds), log=work / "build.log")
    return tfds


def interval(figure: dict) -> str:
    return f"{figure['value']:.3f} [{figure['ci95'][0]:.3f}, {figure['ci95'][1]:.3f}]"


def report(name: str, summary: dict) -> None:
    for k, fold in enumerate(summary["per_fold"]):
        print(f"  {name} fold {k}: ROC AUC {fold['auc']:.3f}  F1 {fold['f1']:.3f} (threshold "
              f"{fold.get('threshold', 0.5):.3f})  fit {fold['fit_seconds'] / 60:.1f} min", flush=True)
    pooled = summary["pooled"]
    minutes = [f["fit_seconds"] / 60 for f in summary["per_fold"]]
    print(f"{name}: pooled out of fold ROC AUC {interval(pooled['auc'])}  PR AUC {interval(pooled['pr_auc'])}  "
          f"F1 {interval(pooled['f1'])}  fit {np.mean(minutes):.1f} min/fold (load {load()})", flush=True)
    print(f"{name}: " + selective_line(pooled), flush=True)


def selective_line(pooled: dict) -> str:
    """ECE before / after temperature scaling and, with a referral band, the figures among answered vs all."""
    line = f"ECE {interval(pooled['ece'])} -> {interval(pooled['ece_scaled'])} after temperature scaling"
    if "coverage" in pooled:
        line += (f"; answers {interval(pooled['coverage'])}: sensitivity {interval(pooled['sensitivity_answered'])} "
                 f"among answered vs {interval(pooled['sensitivity_all'])} among all, specificity "
                 f"{interval(pooled['specificity_answered'])} vs {interval(pooled['specificity_all'])}")
    return line


def member_rows(cv_dir: Path) -> dict[str, dict]:
    """One CV's pooled out-of-fold rows by study, each with the referral band of the fold run that scored it."""
    import csv

    bands = {}
    for fold_dir in cv_dir.glob("fold-*"):
        chosen = json.loads((fold_dir / "metrics.json").read_text()).get("referral") or {}
        bands[fold_dir.name.split("-")[1]] = chosen.get("band")
    with (cv_dir / "predictions.csv").open() as fh:
        return {row["study"]: {**row, "band": bands[row["fold"]]} for row in csv.DictReader(fh)}


def ensemble_rows(members: list[dict[str, dict]]) -> list[dict]:
    """Per study: the members' mean probability, decided at their mean threshold, referred inside their mean
    band, scaled by their mean temperature (each member scored the study out of fold)."""
    rows = []
    for study, first in members[0].items():
        scored = [m[study] for m in members]
        p = float(np.mean([float(r["probability"]) for r in scored]))
        bands = [r["band"] for r in scored if r["band"]]
        low, high = np.mean(bands, axis=0) if len(bands) == len(scored) else (np.nan, np.nan)
        rows.append({"study": study, "patient": first["patient"], "label": int(first["label"]), "probability": p,
                     "threshold": float(np.mean([float(r["threshold"]) for r in scored])),
                     "refer": int(low < p < high),
                     "temperature": float(np.mean([float(r["temperature"]) for r in scored]))})
    return rows


def report_ensemble(cv_dirs: list[Path]) -> None:
    """The first seed's model against the ensemble of all seeds, and what each costs."""
    from tfbonemet.tasks.cv import pooled_figures

    members = [member_rows(d) for d in cv_dirs]
    summaries = [json.loads((d / "cv.json").read_text()) for d in cv_dirs]
    single, ensemble = summaries[0]["pooled"], pooled_figures(ensemble_rows(members))
    n = len(members[0])
    fit = [sum(f["fit_seconds"] for f in s["per_fold"]) / len(s["per_fold"]) / 60 for s in summaries]
    predict, plain = ([sum(f[key] for f in s["per_fold"]) / n * 1000 for s in summaries]
                      for key in ("predict_seconds", "predict_seconds_without_uncertainty"))
    for name, pooled, minutes, ms, ms_plain in (
            ("one model", single, fit[0], predict[0], plain[0]),
            (f"ensemble of {len(cv_dirs)}", ensemble, sum(fit), sum(predict), sum(plain))):
        print(f"{name}: ROC AUC {interval(pooled['auc'])}  F1 {interval(pooled['f1'])}  fit {minutes:.1f} min per "
              f"fold, predict {ms:.1f} ms per study ({ms_plain:.1f} without the test-time shifts)", flush=True)
        print(f"{name}: " + selective_line(pooled), flush=True)


def run_cv(work: Path, tfds: Path, folds: int, name: str, fit_args: str) -> dict:
    cv_dir = work / "cv" / name
    tfbonemet("cv", "--folds", str(folds), "--data", DATA, "--data-dir", str(tfds), "--output-dir",
              str(work / "cv"), "--run-name", name, *shlex.split(fit_args), log=work / f"{name}.log")
    return json.loads((cv_dir / "cv.json").read_text())


def run_reference(tfds: Path, folds: int, epochs: int, seed: int) -> dict:
    """bench_reference's `large` net through the folds `tfbonemet cv` draws (same seed, same split rule)."""
    sys.path.insert(0, str(HERE))
    import bench_reference as ref
    import keras
    import tensorflow as tf

    from tfbonemet.config import FitConfig
    from tfbonemet.data import datasets
    from tfbonemet.data.splits import TRAIN_VALIDATION, assign_folds, assign_splits
    from tfbonemet.tasks.cv import pooled_figures
    from tfbonemet.vocab import SPLITS

    config = FitConfig(data=DATA, data_dir=str(tfds), seed=seed)
    studies = datasets.concatenate([datasets.open_split(config, s) for s in SPLITS])
    size = (160, 64)
    ant, post = [], []
    for features, _ in studies.records(("anterior", "posterior")).as_numpy_iterator():
        ant.append(tf.image.resize(features["anterior"].astype(np.float32) / 255.0, size).numpy())
        post.append(tf.image.resize(features["posterior"][:, ::-1].astype(np.float32) / 255.0, size).numpy())
    x = {"anterior": np.stack(ant), "posterior": np.stack(post)}
    y = studies.task_labels("binary")
    fold_of = assign_folds(studies.patients, y, folds, seed=seed)
    rows, per_fold = [], []
    for k in range(folds):
        test = fold_of == k
        rest = np.flatnonzero(~test)
        split_of = assign_splits(studies.patients[rest], y[rest], TRAIN_VALIDATION, seed=seed + k)
        train, val = rest[split_of == "train"], rest[split_of == "validation"]
        keras.utils.set_random_seed(seed)
        positives = y[train].mean()
        model = ref.build(size, *ref.NETS["large"])
        best = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=epochs, restore_best_weights=True)
        start = time.time()
        model.fit({k_: v[train] for k_, v in x.items()}, y[train],
                  validation_data=({k_: v[val] for k_, v in x.items()}, y[val]), epochs=epochs, batch_size=32,
                  class_weight={0: 0.5 / (1 - positives), 1: 0.5 / positives}, callbacks=[best], verbose=0)
        seconds = time.time() - start
        p = model.predict({k_: v[test] for k_, v in x.items()}, batch_size=256, verbose=0).ravel()
        fold_rows = [{"label": int(label), "probability": float(q), "threshold": 0.5, "patient": str(patient)}
                     for label, q, patient in zip(y[test], p, studies.patients[test])]
        rows += fold_rows
        figures = pooled_figures(fold_rows, n_resamples=1)
        per_fold.append({"auc": figures["auc"]["value"], "f1": figures["f1"]["value"], "fit_seconds": seconds})
    return {"per_fold": per_fold, "pooled": pooled_figures(rows)}


def rank_agreement(real: Path, phantom: Path) -> None:
    """Spearman's rank correlation of pooled ROC AUC over the recipes cross-validated in both work folders."""
    from scipy.stats import spearmanr

    def pooled(work: Path) -> dict[str, float]:
        found = {p.parent.name: p for p in (work / "cv").glob("*/cv.json")}
        if (work / "reference.json").is_file():
            found["reference"] = work / "reference.json"
        return {name: json.loads(p.read_text())["pooled"]["auc"]["value"] for name, p in found.items()}
    a, b = pooled(real), pooled(phantom)
    names = sorted(set(a) & set(b), key=lambda n: -a[n])
    for name in names:
        print(f"  {name:24s} real {a[name]:.3f}  phantom {b[name]:.3f}")
    rho = spearmanr([a[n] for n in names], [b[n] for n in names]).statistic if len(names) > 1 else float("nan")
    print(f"Spearman rank correlation over {len(names)} recipes: {rho:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dev", type=Path, nargs="?", help="BS-80K-layout development folder (never held-out patients)")
    parser.add_argument("--work", type=Path, help="folder for the build, runs and logs (reused)")
    parser.add_argument("--rank", type=Path, nargs=2, metavar=("REAL_WORK", "PHANTOM_WORK"),
                        help="compare the recipes two earlier --work folders cross-validated, and stop")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--name", default="default", help="name of this recipe's CV directory")
    parser.add_argument("--fit-args", default="", help="extra `tfbonemet fit` options: the recipe to try")
    parser.add_argument("--reference", action="store_true", help="the plain reference net instead of tfbonemet")
    parser.add_argument("--reference-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="the reference's seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="cross-validate once per seed (CV directories NAME-sSEED) and report their ensemble")
    args = parser.parse_args()
    if args.rank:
        return rank_agreement(*args.rank)
    if not (args.dev and args.work):
        parser.error("give the development folder and --work")
    os.environ.setdefault("TFBONEMET_SECRET", "bench_real: a per-machine secret for development pseudonyms")
    args.work.mkdir(parents=True, exist_ok=True)
    tfds = build(args.dev, args.work)
    print(f"{args.dev.name}: {args.folds}-fold patient-level CV; load {load()}", flush=True)
    if args.reference:
        summary = run_reference(tfds, args.folds, args.reference_epochs, args.seed)
        (args.work / "reference.json").write_text(json.dumps(summary, indent=2))
        report("reference large", summary)
    elif not args.seeds:
        report(f"tfbonemet fit {args.fit_args}".strip(), run_cv(args.work, tfds, args.folds, args.name,
                                                                  args.fit_args))
    else:
        names = [f"{args.name}-s{seed}" for seed in args.seeds]
        for seed, name in zip(args.seeds, names):
            fit_args = f"{args.fit_args} --seed {seed}".strip()
            report(f"tfbonemet fit {fit_args}", run_cv(args.work, tfds, args.folds, name, fit_args))
        if len(names) > 1:
            report_ensemble([args.work / "cv" / name for name in names])


if __name__ == "__main__":
    main()
