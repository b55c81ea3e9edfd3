"""Input pipeline throughput (images/s; one study = two view images): tf.data with and without the fused
augmentation against a naive per-image PIL loop doing the same work.

    python bench/bench_pipeline.py --num-studies 320 --size 512 128 --epochs 3
    python bench/bench_pipeline.py --data tfds:bone_scintigraphy/binary --data-dir /tmp/real/tfds --size 168 64

CPU ms/batch is the process CPU time per batch: what the pipeline takes from the training step when
both share the same cores. Printed, never asserted. The phantom set is rendered once into the cache first (not timed).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def naive_pil_epoch(anterior, posterior, size, batch_size, rng):
    """What a hand-written loader does: per image resize, rotate, flip, normalise, then stack a batch."""
    import numpy as np
    from PIL import Image

    height, width = size
    batches = []
    for start in range(0, len(anterior), batch_size):
        out = {"anterior": [], "posterior": []}
        for i in range(start, min(start + batch_size, len(anterior))):
            angle, flip = rng.uniform(-5, 5), rng.random() < 0.5
            for view, images in (("anterior", anterior), ("posterior", posterior)):
                image = Image.fromarray(images[i].astype(np.float32), mode="F")
                if view == "posterior":
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                image = image.resize((width, height), Image.Resampling.BILINEAR).rotate(angle)
                if flip:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                x = np.asarray(image)
                x = np.sqrt(np.clip(x / max(np.percentile(x, 99.5), 1.0), 0, 1))
                out[view].append(x[..., None])
        batches.append({k: np.stack(v) for k, v in out.items()})
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="phantom", help="phantom, or a built tfds:NAME (with --data-dir)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-studies", type=int, default=320, help="phantom studies")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from tfbonemet.config import FitConfig
    from tfbonemet.data import datasets
    from tfbonemet.data.pipeline import BatchConfig
    from tfbonemet.preprocessing.augment import STANDARD, make_augment
    from tfbonemet.run import preprocessor_for
    from tfbonemet.tasks.train.recipe import fit_recipe, intensity_scale

    height, width = args.size
    config = FitConfig(data=args.data, data_dir=args.data_dir, num_studies=args.num_studies, image_height=height,
                       image_width=width, batch_size=args.batch_size)
    split = datasets.open_split(config, "train")
    recipe = fit_recipe(config)
    config = dataclasses.replace(config, intensity_scale=intensity_scale(config, recipe, split, log=print))
    preprocessor = preprocessor_for(config, recipe.views, (height, width))
    steps = -(-len(split) // args.batch_size)
    images = 2 * steps * args.batch_size * args.epochs
    print(f"{len(split)} training studies of {args.data}, {height}x{width}, batch {args.batch_size}, {args.epochs} "
          f"epochs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    geometric = {"rotation": 5.0, "flip_left_right": True}  # the PIL loop's work
    for name, augment in (("tf.data, no augmentation", None),
                          ("tf.data, fit's default (flip + 3% shift)", make_augment(FitConfig().augmentation, "sqrt")),
                          ("tf.data, fused rotation + flip", make_augment(geometric, "sqrt")),
                          ("tf.data, fused STANDARD (+zoom, shift, noise)", make_augment(STANDARD.as_dict(), "sqrt"))):
        ds = split.batches(preprocessor, BatchConfig(batch_size=args.batch_size), training=True, task=recipe.task,
                           augment=augment, repeat=True)
        iterator = iter(ds)
        for _ in range(steps):  # the first epoch fills the preprocessing cache
            next(iterator)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps * args.epochs):
            next(iterator)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"{name:46s} {images / seconds:8.0f} img/s  {seconds / (steps * args.epochs) * 1000:6.2f} ms/batch  "
              f"{cpu / (steps * args.epochs) * 1000:6.2f} CPU ms/batch")
    if args.data == "phantom":
        from tfbonemet.data import synthetic

        studies = synthetic.load_or_render(synthetic.SyntheticSpec(num_studies=args.num_studies, height=height,
                                                                   width=width), log=lambda *_: None)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(args.epochs):
            naive_pil_epoch(studies.anterior, studies.posterior, args.size, args.batch_size, rng)
        print(f"{'naive PIL loop (resize, rotate, flip)':46s} "
              f"{2 * len(studies) * args.epochs / (time.perf_counter() - start):8.0f} img/s")


if __name__ == "__main__":
    main()
