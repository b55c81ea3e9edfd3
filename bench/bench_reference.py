"""Plain Keras reference nets, to calibrate the phantom against real bone scans.

Two-branch CNN (anterior + mirrored posterior), BN, light augmentation, class weights, Adam:
  large = 2 convs per block, 32-64-128 (real BS-80K right-chest crops: test ROC AUC 0.926)
  small = 1 conv per block, 16-32-64   (real: 0.744)
Deliberately independent of tfbonemet's pipeline, so it measures the data, not the package.

  python bench/bench_reference.py crops DIR [--region chestR]     # BS-80K layout (tfbonemet data phantom --layout bs80k)
  python bench/bench_reference.py wholebody --num-studies 800 --size 256 64 [--difficulty realistic]
Prints test ROC AUC, PR AUC, F1 at 0.5 and wall time per net; splits are by patient (70/15/15).
"""
from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

NETS = {"large": ((32, 64, 128), 2), "small": ((16, 32, 64), 1)}


def read_crops(folder: Path, region: str):
    """Both views of every patient listed in <region>ANT/POST, 8-bit scaled to 0-1; label 1 if either view is."""
    views, labels = [], {}
    for view in ("ANT", "POST"):
        sub = folder / f"{region}{view}"
        listed = dict(line.split() for line in (sub / f"{sub.name}.txt").read_text().splitlines() if line.strip())
        names = sorted(listed)
        for name in names:
            labels[name] = max(labels.get(name, 0), int(listed[name]))
        views.append(np.stack([np.asarray(Image.open(sub / n).convert("L"), np.float32) / 255.0 for n in names]))
    return views[0], views[1], np.array([labels[n] for n in names]), [Path(n).stem for n in names]


def scale_counts(view) -> np.ndarray:
    """A whole-body view's counts -> sqrt, scaled by its 99.5th percentile, clipped at 1.5."""
    root = np.sqrt(np.asarray(view, np.float32))
    return np.clip(root / max(np.percentile(root, 99.5), 1e-6), 0, 1.5)


def render_wholebody(n: int, size, difficulty: str, seed: int):
    """Whole-body phantom studies, sqrt counts scaled by each view's 99.5th percentile."""
    from tfbonemet.data.phantom import BoneScanPhantom

    phantom = BoneScanPhantom(shape=size, seed=seed, difficulty=difficulty)
    studies = [phantom.study(i) for i in range(n)]
    return (np.stack([scale_counts(s.anterior) for s in studies]),
            np.stack([scale_counts(s.posterior) for s in studies]),
            np.array([int(s.is_metastatic) for s in studies]), [s.patient_id for s in studies])


def split_by_patient(patients, seed=0):
    """train/validation/test by a hash of the patient id: 70/15/15."""
    u = np.array([zlib.crc32(f"{seed}:{p}".encode()) / 2 ** 32 for p in patients])
    return np.where(u < 0.7, "train", np.where(u < 0.85, "validation", "test"))


def build(shape, filters, convs):
    import keras
    from keras import layers

    def branch(x, name):
        x = layers.RandomTranslation(0.04, 0.04, fill_mode="constant", name=f"{name}_shift")(x)
        for i, f in enumerate(filters):
            for j in range(convs):
                x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv{i}{j}")(x)
                x = layers.BatchNormalization(name=f"{name}_bn{i}{j}")(x)
                x = layers.ReLU()(x)
            x = layers.MaxPooling2D()(x)
        return layers.GlobalAveragePooling2D()(x)

    ant, post = keras.Input((*shape, 1), name="anterior"), keras.Input((*shape, 1), name="posterior")
    x = layers.Concatenate()([branch(ant, "ant"), branch(post, "post")])
    out = layers.Dense(1, activation="sigmoid")(layers.Dropout(0.3)(x))
    model = keras.Model([ant, post], out)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    return model


def train_and_test(name, ant, post, labels, split, size, epochs, batch):
    import keras
    import tensorflow as tf
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    keras.utils.set_random_seed(0)
    ant = tf.image.resize(ant[..., None], size).numpy()
    post = tf.image.resize(post[:, :, ::-1, None], size).numpy()  # mirrored: patient's right on one side
    part = {s: (dict(anterior=ant[split == s], posterior=post[split == s]), labels[split == s])
            for s in ("train", "validation", "test")}
    positives = part["train"][1].mean()
    weights = {0: 0.5 / (1 - positives), 1: 0.5 / positives}
    filters, convs = NETS[name]
    model = build(size, filters, convs)
    best = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=epochs, restore_best_weights=True)
    start = time.time()
    model.fit(*part["train"], validation_data=part["validation"], epochs=epochs, batch_size=batch,
              class_weight=weights, callbacks=[best], verbose=0)
    wall = time.time() - start
    p = model.predict(part["test"][0], batch_size=256, verbose=0).ravel()
    y = part["test"][1]
    print(f"{name:6s} test n={len(y)} pos={int(y.sum())}  ROC AUC {roc_auc_score(y, p):.3f}  "
          f"PR AUC {average_precision_score(y, p):.3f}  F1@0.5 {f1_score(y, p >= 0.5):.3f}  "
          f"train {wall / 60:.1f} min", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=("crops", "wholebody"))
    parser.add_argument("folder", nargs="?", type=Path, help="BS-80K-layout folder (crops)")
    parser.add_argument("--region", default="chestR")
    parser.add_argument("--num-studies", type=int, default=800)
    parser.add_argument("--size", type=int, nargs=2, default=None, help="network input H W "
                        "(crops: 160 64 as the real reference; wholebody: also the render size, default 256 64)")
    parser.add_argument("--difficulty", default="realistic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    args = parser.parse_args()
    if args.source == "crops":
        ant, post, labels, patients = read_crops(args.folder, args.region)
        size = tuple(args.size or (160, 64))
    else:
        size = tuple(args.size or (256, 64))
        ant, post, labels, patients = render_wholebody(args.num_studies, size, args.difficulty, args.seed)
    split = split_by_patient(patients, args.seed)
    print(f"{args.source}: {len(labels)} patients, {labels.mean():.1%} positive, input {size[0]}x{size[1]}, "
          f"{args.epochs} epochs; train {np.sum(split == 'train')}, validation {np.sum(split == 'validation')}, "
          f"test {np.sum(split == 'test')}", flush=True)
    for name in args.nets:
        train_and_test(name, ant, post, labels, split, size, args.epochs, args.batch)


if __name__ == "__main__":
    main()
