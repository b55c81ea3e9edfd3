"""Training throughput per registered model: the real tf.data pipeline against in-memory cached batches
(ratio; target >= 0.95), and float32 against the other settings `--precision auto --jit auto` probes on this
CPU (mixed_bfloat16 only with native bfloat16; XLA): fit steps in alternating rounds, best of `--repeats`,
as tfbonemet.execution's probe times them. The cached batches are the
pipeline's own first batches kept in memory, so both sides train on the same tensors.

    python bench/bench_train.py --models two_view_net --size 512 128 --steps 10
    python bench/bench_train.py --size 256 64 --steps 4 --no-precision   # every registered model
    python bench/bench_train.py --models two_view_net --size 256 64 --no-pipeline \
        --settings float32+noxla mixed_bfloat16+noxla float32+xla mixed_bfloat16+xla

Printed, never asserted. The phantom set is rendered once into the cache first (not timed).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def best_rates(model, streams, steps, batch_size, repeats):
    """Studies/s of each stream, best of `repeats` rounds taken in turn, so a load spike from other
    processes hits both streams alike; one untimed epoch first traces the step and fills the caches."""
    for ds, warmup_steps in streams:
        model.fit(ds, steps_per_epoch=warmup_steps, epochs=1, verbose=0, shuffle=False)
    rates = [0.0] * len(streams)
    for _ in range(repeats):
        for i, (ds, _) in enumerate(streams):
            start = time.perf_counter()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
            rates[i] = max(rates[i], steps * batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--num-studies", type=int, default=320, help="phantom studies (70 %% train)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augment", choices=("default", "standard", "none"), default="default",
                        help="training augmentation in the pipeline: fit's default set, STANDARD, or none")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the pipeline vs cached comparison")
    parser.add_argument("--no-precision", dest="precision", action="store_false",
                        help="skip the precision / XLA comparison")
    parser.add_argument("--settings", nargs="+", metavar="PRECISION+XLA",
                        help="settings to compare, e.g. float32+noxla mixed_bfloat16+xla (default: the ones "
                             "`--precision auto --jit auto` probes on this CPU, float32+noxla first)")
    args = parser.parse_args()

    from tfbonemet import execution
    from tfbonemet.config import FitConfig
    from tfbonemet.data import datasets
    from tfbonemet.models import MODELS, build_model
    from tfbonemet.preprocessing.augment import STANDARD, make_augment

    height, width = args.size
    config = FitConfig(image_height=height, image_width=width, batch_size=args.batch_size,
                       num_studies=args.num_studies)
    split = datasets.open_split(config, "train") if args.pipeline else None
    print(f"{len(split) if split else 'no'} training studies, {height}x{width}, batch {args.batch_size}, "
          f"{args.steps} steps, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"augmentation {args.augment}", flush=True)
    sets = {"default": FitConfig().augmentation, "standard": STANDARD.as_dict(), "none": {}}
    augment = make_augment(sets[args.augment], config.normalisation)
    for name in args.models or sorted(MODELS):
        parts = [pipeline_vs_cached(name, split, augment, args)] if args.pipeline else []
        if args.precision:  # the probe's own steppers and rounds, without its cache or its 10 % rule
            build = lambda name=name: build_model(name, image_size=(height, width))  # noqa: E731
            options = ([(p, x == "xla") for p, x in (label.split("+") for label in args.settings)] if args.settings
                       else execution.candidates("auto", "auto"))
            timings = execution.alternate({execution.label(c): execution.FitStepper(c, build, args.batch_size)
                                           for c in options}, args.repeats)
            base = min(timings[execution.label(options[0])])
            parts += [f"{label} {args.batch_size / min(t):.1f} studies/s ({base / min(t):.2f}x; ms/step "
                      f"{' / '.join(f'{s * 1000:.0f}' for s in t)})" for label, t in timings.items()]
        print(f"{name:18s} {'; '.join(parts)}; load average {os.getloadavg()[0]:.1f}", flush=True)


def pipeline_vs_cached(name, split, augment, args) -> str:
    """Studies/s of fit's real tf.data pipeline and of its first batches cached in memory, same model."""
    import keras

    from tfbonemet.config import FitConfig
    from tfbonemet.data.pipeline import BatchConfig
    from tfbonemet.run import preprocessor_for
    from tfbonemet.tasks.train.recipe import fit_recipe

    height, width = args.size
    config = FitConfig(model=name, image_height=height, image_width=width)
    recipe = fit_recipe(config)
    preprocessor = preprocessor_for(config, recipe.views, (height, width))
    real = split.batches(preprocessor, BatchConfig(batch_size=args.batch_size), training=True, task=recipe.task,
                         augment=augment, repeat=True)
    cached = real.take(args.steps).cache().repeat()
    keras.utils.set_random_seed(0)
    model = recipe.build()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", jit_compile=False)
    epoch = -(-len(split) // args.batch_size)
    real_rate, cached_rate = best_rates(model, [(real, epoch), (cached, args.steps)], args.steps,
                                        args.batch_size, args.repeats)
    return (f"pipeline {real_rate:.1f} studies/s, cached {cached_rate:.1f} studies/s, "
            f"ratio {real_rate / cached_rate:.2f}")


if __name__ == "__main__":
    main()
