"""Where the time of a real `tfbonemet fit` epoch goes, and the input pipeline against cached batches.

Runs the package's own fit (defaults plus `--set KEY=VALUE`) on a built dataset and times every epoch's
training steps, each callback's end-of-epoch work (validation pass, TensorBoard summaries and CAM
images, best-epoch checkpoint, backup) and Keras' own validation pass if any. With `--rounds N` it
alternates N fits through the real tf.data pipeline with N fits whose training stream is the same
pipeline's first epoch kept in memory (`take(steps).cache().repeat()`: the cached step rate, same model,
same precision, same callbacks), so load from other processes hits both alike. The first epoch (tracing,
filling the preprocessing cache) is left out of the medians.

    python bench/bench_epoch.py --data tfds:bone_scintigraphy/binary --data-dir /tmp/real/tfds --epochs 4
    python bench/bench_epoch.py --epochs 4 --rounds 2          # the built-in phantom

Printed, never asserted.
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def timed_fit(fit, cached: bool, times: dict):
    """`keras.Model.fit` that records per epoch: training-step seconds (first to last batch end, so the
    step count is one less than the batches), each callback's `on_epoch_end` and Keras' validation pass."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.begin, self.first = time.perf_counter(), None

        def on_train_batch_end(self, batch, logs=None):
            self.first = self.first or time.perf_counter()
            self.last, self.batches = time.perf_counter(), batch + 1

        def on_test_begin(self, logs=None):
            self.test = time.perf_counter()

        def on_test_end(self, logs=None):
            times["Keras validation pass"].append(time.perf_counter() - self.test)

    clock = Clock()

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            times["epoch"].append(time.perf_counter() - clock.begin)
            times["step"].append((clock.last - clock.first) / (clock.batches - 1))
            times["steps"].append(clock.batches)

    def timed(callback):
        end, name = callback.on_epoch_end, type(callback).__name__

        def on_epoch_end(epoch, logs=None):
            start = time.perf_counter()
            end(epoch, logs)
            times[name].append(time.perf_counter() - start)
        callback.on_epoch_end = on_epoch_end
        return callback

    def wrapped(model, x=None, *args, callbacks=(), steps_per_epoch=None, **kwargs):
        if not any(type(c).__name__ == "ValidationAUC" for c in callbacks):  # not the run's training (a probe)
            return fit(model, x, *args, callbacks=callbacks, steps_per_epoch=steps_per_epoch, **kwargs)
        if cached:
            x = x.take(steps_per_epoch).cache().repeat()
        return fit(model, x, *args, steps_per_epoch=steps_per_epoch, callbacks=[clock, *map(timed, callbacks),
                                                                                 EpochEnd()], **kwargs)
    return wrapped


def one_fit(config, cached: bool) -> dict:
    import keras

    from tfbonemet.tasks.train import trainer

    times = collections.defaultdict(list)
    fit = keras.Model.fit
    keras.Model.fit = timed_fit(fit, cached, times)
    try:
        trainer.fit(config, log=lambda *_: None)
    finally:
        keras.Model.fit = fit
    return times


def median_after_first(values) -> float:
    import numpy as np

    return float(np.median(values[1:] if len(values) > 1 else values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="phantom")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="pipeline / cached fits, alternating")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="FitConfig fields (JSON values)")
    args = parser.parse_args()

    import json

    from tfbonemet.config import FitConfig

    overrides = {k: json.loads(v) if v[:1] in "[{0123456789tfn-" else v
                 for k, v in (item.split("=", 1) for item in args.set)}
    config = FitConfig(data=args.data, data_dir=args.data_dir, epochs=args.epochs, output_dir=tempfile.mkdtemp(),
                       **overrides)
    print(f"fit defaults{' + ' + ' '.join(args.set) if args.set else ''} on {args.data}, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.rounds):
        rows = {}
        for name, cached in (("pipeline", False), ("cached", True)):
            times = one_fit(config, cached)
            rows[name] = times
            parts = [f"{key} {median_after_first(v):.2f} s" for key, v in times.items()
                     if key not in ("epoch", "step", "steps")]
            print(f"{name:8s} {median_after_first(times['step']) * 1000:6.1f} ms/step, epoch "
                  f"{median_after_first(times['epoch']):.1f} s for {times['steps'][-1]} steps "
                  f"(median of epochs 2-{len(times['epoch'])}); " + ", ".join(parts), flush=True)
        step = {name: median_after_first(t["step"]) for name, t in rows.items()}
        epoch = {name: median_after_first(t["epoch"]) for name, t in rows.items()}
        print(f"pipeline / cached: training steps {step['cached'] / step['pipeline']:.2f} of the cached rate, "
              f"whole epochs {epoch['cached'] / epoch['pipeline']:.2f}; steps alone would take "
              f"{step['cached'] * rows['cached']['steps'][-1]:.1f} s an epoch; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
