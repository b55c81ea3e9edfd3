"""Accuracy of `tfbonemet fit` defaults against the plain Keras references, as a real user would run them.

The protocol of the real-scan evaluation (bench/README.md), on the realistic phantom:
  train folder (BS-80K chest crops) -> `tfbonemet data build` -> `tfbonemet fit --data tfds:...` (defaults)
  -> `tfbonemet predict RUN TEST_FOLDER` on held-out patients -> ROC AUC, PR AUC, F1 at the stored label.
The references (bench/bench_reference.py: 2 convs/block 32-64-128 "large", 1 conv/block 16-32-64
"small") train on the same train folder and are scored on the same held-out folder, at 0.5.
`--layout wholebody`: the folders are whole-body NM DICOM studies (`tfbonemet data phantom`, two-frame
files + labels.csv) at --size; the references read the same files and train at --reference-size.

  python bench/bench_accuracy.py --work /tmp/acc --patients 1600 --test-patients 600
  python bench/bench_accuracy.py --work /tmp/wb --layout wholebody --patients 1000 --test-patients 300
  python bench/bench_accuracy.py --work /tmp/acc --recipes default --fit-args "--epochs 20"
Each recipe runs in its own process (TensorFlow state never leaks between them); wall times are
whole commands on this machine, so compare rows of one run, and note the load it prints.
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

HERE = Path(__file__).resolve().parent
REGION = "chestR"


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def sh(args: list[str], log: Path) -> float:
    """Run a command, its output to `log`; returns wall seconds, exits on failure."""
    start = time.time()
    with log.open("w") as fh:
        code = subprocess.call(args, stdout=fh, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(map(shlex.quote, args))} failed (exit {code}); see {log}")
    return time.time() - start


_PHANTOM = None


def _study(args):
    """Study `i` of the phantom of (seed, difficulty), in a worker process."""
    global _PHANTOM
    seed, difficulty, i = args
    if _PHANTOM is None:
        from tfbonemet.data.phantom import BoneScanPhantom, bs80k

        _PHANTOM = BoneScanPhantom(seed=seed, difficulty=difficulty, class_probs=bs80k.CLASS_PROBS)
    return _PHANTOM.study(i)


def render(folder: Path, patients: int, seed: int, difficulty: str) -> None:
    """A BS-80K layout folder of right-chest crops (1024x256 whole-body phantoms), once per arguments.

    Studies are rendered on every core (each study is a pure function of seed and index), written in order.
    """
    if (folder / f"{REGION}ANT" / f"{REGION}ANT.txt").is_file():
        return
    from tfbonemet.data.phantom import bs80k

    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        studies = pool.imap(_study, ((seed, difficulty, i) for i in range(patients)), chunksize=8)
        bs80k.write_bs80k(studies, folder, regions=(REGION,))


def render_wholebody(folder: Path, patients: int, seed: int, difficulty: str, size) -> None:
    """Whole-body NM DICOM studies via `tfbonemet data phantom`, once per arguments."""
    if (folder / "labels.csv").is_file():
        return
    sh([str(Path(sys.executable).with_name("tfbonemet")), "data", "phantom", str(folder), "--num-studies",
        str(patients), "--size", *map(str, size), "--seed", str(seed), "--difficulty", difficulty],
       folder.parent / f"render-{folder.name}.log")


def wholebody_labels(folder: Path) -> dict[str, int]:
    """Study key (as `predict` keys it: the keyed hash of the StudyInstanceUID) -> 1 if metastasis."""
    from tfbonemet.io.pseudonym import study_key_for_uid

    with (folder / "labels.csv").open() as fh:
        return {study_key_for_uid(row["study_instance_uid"]): int(row["label"] == "metastasis")
                for row in csv.DictReader(fh)}


def test_labels(folder: Path) -> dict[str, int]:
    """Patient (file stem) -> 1 if either view's list says metastasis; whole-body: by study key."""
    if (folder / "labels.csv").is_file():
        return wholebody_labels(folder)
    labels: dict[str, int] = {}
    for view in ("ANT", "POST"):
        listing = folder / f"{REGION}{view}" / f"{REGION}{view}.txt"
        for line in listing.read_text().splitlines():
            if line.strip():
                name, label = line.split()
                labels[Path(name).stem] = max(labels.get(Path(name).stem, 0), int(label))
    return labels


def figures(y, p, decided) -> str:
    return (f"ROC AUC {roc_auc_score(y, p):.3f}  PR AUC {average_precision_score(y, p):.3f}  "
            f"F1 {f1_score(y, decided):.3f}")


def run_default(work: Path, test: Path, fit_args: str, name: str) -> str:
    tfbonemet = str(Path(sys.executable).with_name("tfbonemet"))
    tfds = work / "tfds"
    if not (tfds / "bone_scintigraphy").exists():
        sh([tfbonemet, "data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", str(work / "train"),
            "--data-dir", str(tfds)], work / "build.log")
    run_dir = work / "runs" / name
    wall = sh([tfbonemet, "fit", "--data", "tfds:bone_scintigraphy/binary", "--data-dir", str(tfds),
               "--output-dir", str(work / "runs"), "--run-name", name, *shlex.split(fit_args)], work / f"{name}.log")
    out = work / f"{name}-test.csv"
    sh([tfbonemet, "predict", str(run_dir), str(test), "-o", str(out)], work / f"{name}-predict.log")
    labels = test_labels(test)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([labels[r["study"]] for r in rows])
    p = np.array([float(r["p_metastasis"]) for r in rows])
    decided = np.array([r["label"] == "metastasis" for r in rows])
    return f"{figures(y, p, decided)} (stored threshold)  fit {wall / 60:.1f} min"


def read_wholebody(folder: Path):
    """The DICOM folder's views (scaled as bench_reference scales its whole-body renders), labels
    and study keys."""
    from bench_reference import scale_counts
    from tfbonemet.io.dicom import read_studies

    labels = wholebody_labels(folder)
    studies = sorted(read_studies([folder]), key=lambda s: s.study_key)
    return (np.stack([scale_counts(s.anterior) for s in studies]),
            np.stack([scale_counts(s.posterior) for s in studies]),
            np.array([labels[s.study_key] for s in studies]), [s.study_key for s in studies])


def run_reference(work: Path, test: Path, net: str, epochs: int, size) -> str:
    """bench_reference's net trained on the train folder, scored on the held-out folder."""
    sys.path.insert(0, str(HERE))
    import bench_reference as ref
    import keras
    import tensorflow as tf

    wholebody = (work / "train" / "labels.csv").is_file()
    read = read_wholebody if wholebody else (lambda folder: ref.read_crops(folder, REGION))
    ant, post, labels, patients = read(work / "train")
    split = ref.split_by_patient(patients)

    def inputs(a, p):
        return {"anterior": tf.image.resize(a[..., None], size).numpy(),
                "posterior": tf.image.resize(p[:, :, ::-1, None], size).numpy()}
    x, train_y = inputs(ant, post), labels
    keras.utils.set_random_seed(0)
    positives = train_y[split == "train"].mean()
    model = ref.build(size, *ref.NETS[net])
    best = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=epochs, restore_best_weights=True)
    start = time.time()
    model.fit({k: v[split == "train"] for k, v in x.items()}, train_y[split == "train"],
              validation_data=({k: v[split == "validation"] for k, v in x.items()}, train_y[split == "validation"]),
              epochs=epochs, batch_size=32, class_weight={0: 0.5 / (1 - positives), 1: 0.5 / positives},
              callbacks=[best], verbose=0)
    wall = time.time() - start
    t_ant, t_post, t_y, _ = read(test)
    p = model.predict(inputs(t_ant, t_post), batch_size=256, verbose=0).ravel()
    return f"{figures(t_y, p, p >= 0.5)} (at 0.5)  train {wall / 60:.1f} min"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for data, runs and logs (reused)")
    parser.add_argument("--patients", type=int, default=1600, help="training-folder patients (70/15/15 inside)")
    parser.add_argument("--test-patients", type=int, default=600)
    parser.add_argument("--difficulty", default="realistic")
    parser.add_argument("--layout", choices=("crops", "wholebody"), default="crops",
                        help="BS-80K right-chest crops (the real evaluation's data) or whole-body DICOM studies")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"),
                        help="wholebody: rendered pixels per view")
    parser.add_argument("--reference-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="references' input (crops: 160 64, as on real scans; wholebody: 256 64)")
    parser.add_argument("--recipes", default="default,large,small",
                        help="comma list: default (tfbonemet fit), large, small (plain references)")
    parser.add_argument("--fit-args", default="", help="extra `tfbonemet fit` options for the default row")
    parser.add_argument("--name", default="default", help="run name of the default row")
    parser.add_argument("--reference-epochs", type=int, default=15)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one reference in this process
    args = parser.parse_args()
    train, test = args.work / "train", args.work / "test"
    os.environ.setdefault("TFBONEMET_SECRET", "bench_accuracy: phantom studies, no patients")  # keyed pseudonyms
    reference_size = tuple(args.reference_size or ((160, 64) if args.layout == "crops" else (256, 64)))
    if args.one:
        print(run_reference(args.work, test, args.one, args.reference_epochs, reference_size), flush=True)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.layout == "crops":
        render(train, args.patients, seed=101, difficulty=args.difficulty)
        render(test, args.test_patients, seed=202, difficulty=args.difficulty)
    else:
        render_wholebody(train, args.patients, 101, args.difficulty, args.size)
        render_wholebody(test, args.test_patients, 202, args.difficulty, args.size)
    held_out = test_labels(test)
    print(f"phantom {args.difficulty} {args.layout}: {args.patients} training patients, {len(held_out)} held out "
          f"({sum(held_out.values())} positive); load {load()}", flush=True)
    for recipe in args.recipes.split(","):
        if recipe == "default":
            line = run_default(args.work, test, args.fit_args, args.name)
        else:
            line = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--one", recipe,
                                   "--reference-epochs", str(args.reference_epochs),
                                   "--reference-size", *map(str, reference_size)],
                                  capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        label = f"tfbonemet fit {args.fit_args}".strip() if recipe == "default" else f"reference {recipe}"
        print(f"{label:40s} {line}  (load {load()})", flush=True)


if __name__ == "__main__":
    main()
