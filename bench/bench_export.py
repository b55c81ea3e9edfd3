"""Export benchmark: per-image latency and batch throughput of each deployed form, beside its parity.

    python bench/bench_export.py RUN_DIR [--export-dir VERSION_DIR] [--batch 32] [--repeats 50] [--threads 2]

Exports RUN_DIR (all formats, parity-checked) unless --export-dir names an existing version, then
times the Keras model, the SavedModel signatures and every TFLite file on validation studies.
Latency is the median of `repeats` single-image calls after warm-up; throughput is images per
second at `--batch`. The machine's load average is printed with the table: timings on a shared
machine are upper bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, fastest) seconds per call; on a shared machine the fastest is the closer to an idle one."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def candidates(version: Path, run_dir: Path, threads: int, x: dict, raw: dict):
    """(name, parity key, call on the first n studies) for every form of the model.

    `x` holds preprocessed model inputs, `raw` the same studies as counts (for `serving_default`).
    """
    import tensorflow as tf

    from tfbonemet.tasks.predict import KerasRunner, TFLiteRunner

    def first(inputs, n, convert=lambda v: v):
        return {k: convert(v[:n]) for k, v in inputs.items()}

    keras_runner = KerasRunner(run_dir)
    yield "Keras float32", None, lambda n: keras_runner.predict_preprocessed(first(x, n))
    signatures = tf.saved_model.load(str(version)).signatures
    yield ("SavedModel serving_default (raw counts, preprocessing inside)", "savedmodel",
           lambda n: signatures["serving_default"](**first(raw, n, tf.constant)))
    yield ("SavedModel preprocessed", "savedmodel",
           lambda n: signatures["preprocessed"](**first(x, n, tf.constant)))
    for path in sorted((version / "tflite").glob("*.tflite"), key=lambda p: p.stat().st_size, reverse=True):
        runner = TFLiteRunner(path, keras_runner.info, num_threads=threads)
        yield (f"TFLite {path.stem} ({path.stat().st_size / 1024:.0f} KiB)", path.stem,
               lambda n, r=runner: r.predict_preprocessed(first(x, n)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--export-dir", type=Path, default=None, help="an existing version folder of RUN_DIR")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TFLite interpreter threads")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfbonemet.data.datasets import load_split
    from tfbonemet.data.pipeline import input_names, preprocess_views
    from tfbonemet.evaluate import load_run
    from tfbonemet.tasks.export import export

    version = args.export_dir or export(args.run_dir, tempfile.mkdtemp(prefix="bench-export-"), log=print)
    parity = json.loads((version / "parity.json").read_text())["artefacts"]
    run = load_run(args.run_dir)
    val = load_split(run.config, "validation", log=lambda *_: None)
    index = np.resize(np.arange(len(val)), args.batch)  # repeat studies if the split is smaller than a batch
    raw = {"anterior": val.anterior[index, ..., None].astype(np.float32),
           "posterior": val.posterior[index, ..., None].astype(np.float32)}
    x = {k: v.numpy() for k, v in preprocess_views(raw, run.pipeline()).items()}
    names = input_names(run.views)
    raw = {name: raw[view] for name, view in zip(names, ("anterior", "posterior"))}

    rows = []
    for name, key, fn in candidates(version, args.run_dir, args.threads, x, raw):
        latency, fastest = timed(lambda: fn(1), args.repeats)
        batch_time, _ = timed(lambda: fn(args.batch), max(3, args.repeats // 5), warmup=1)
        p = parity.get(key, {"max_abs_diff": 0.0, "auc_diff": 0.0})
        rows.append({"model": name, "latency_ms": 1e3 * latency, "fastest_ms": 1e3 * fastest,
                     "throughput_per_s": args.batch / batch_time, "max_abs_diff": p["max_abs_diff"],
                     "auc_diff": p["auc_diff"]})
        print(f"  {name}: {1e3 * latency:.2f} ms/image, {args.batch / batch_time:.1f} images/s", file=sys.stderr)
    keras_latency = rows[0]["latency_ms"]
    load = os.getloadavg()
    print(f"\nModel {run.model.name} ({run.model.count_params():,} parameters), input "
          f"{run.config.image_height}x{run.config.image_width} x {len(names)} view(s); validation n="
          f"{len(val)}, Keras AUC {parity[next(iter(parity))]['auc_keras']:.3f}; {os.cpu_count()} CPUs, "
          f"TFLite threads {args.threads}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| model | latency ms/image, median (fastest) | speed-up vs Keras | throughput (images/s, batch "
          f"{args.batch}) | max abs Δp | ΔAUC |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['latency_ms']:.2f} ({r['fastest_ms']:.2f}) | "
              f"{keras_latency / r['latency_ms']:.1f}x | {r['throughput_per_s']:.1f} | {r['max_abs_diff']:.1e} | "
              f"{r['auc_diff']:+.4f} |")
    if args.output:
        args.output.write_text(json.dumps({"load_average": load, "cpus": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
