"""Every registered tfbonemet net against its MONAI / torchvision / plain-torch counterpart, side by side.

Each framework runs in its own process (TensorFlow and torch 2.x in one process segfault): this
script imports neither, starts one long-lived worker per side and per net, and asks them in turn
for timed windows of training steps (batch 16, Adam 1e-4, random in-memory inputs), the order
swapped every round, so load from other processes hits both sides alike; the best window counts.

    python bench/bench_monai.py                                   # every registered net
    python bench/bench_monai.py --models densenet121 two_view_net --rounds 3
    TFBONEMET_TORCH_PYTHON=/work/torchenv/bin/python python bench/bench_monai.py

tfbonemet runs at float32 (no XLA) and at its `--precision auto --jit auto` choice (the probe of
tfbonemet.execution, as `fit` runs it; cached). torch runs float32 under `--torch-python` (an
interpreter with torch, torchvision and monai; see bench/torch_nets.py) with
OMP_WAIT_POLICY=PASSIVE: on a shared, oversubscribed machine torch's spinning OpenMP threads
otherwise lose up to 8x. % of peak: 3 x forward FLOPs (bench/model_flops.py) per image x img/s over
the matmul GFLOP/s this script measures at the precision used (best of one measurement before each
net and one at the end: load only lowers it). two_view_net counts studies (two views each).
`--tf-variant` adds tfbonemet float32 runs with other settings (oneDNN, threads, batch) to the same
rounds. Printed, never asserted.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETS = ("two_view_net", "dscint", "vgg16", "yim_vgg16", "resnet50", "densenet121", "xception", "inception_v3",
        "efficientnetv2_s")  # tfbonemet.models.MODELS, listed here so this process never imports TensorFlow


class Worker:
    """A timing process: one JSON line when ready, then one JSON line per `N` (steps) sent.

    Started on construction; `ready` waits for its first line, so workers started together warm up together.
    """

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=HERE.parent)

    @functools.cached_property
    def ready(self) -> dict:
        return self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {' '.join(self.proc.args[1:4])} failed (exit {self.proc.wait()})")
        return json.loads(line)

    def window(self, steps: int) -> float:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return self._read()["s"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def serve(ready: dict, seconds_per_step) -> None:
    """The worker's side of `Worker`: `ready` as the first line, then one timed window per request."""
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        print(json.dumps({"s": seconds_per_step(int(line))}), flush=True)


def tf_worker(args) -> None:
    """The tfbonemet side: `execution.FitStepper` (compiled `fit` steps) at a precision, or the auto choice."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(HERE))
    from model_flops import forward_flops

    from tfbonemet import execution
    from tfbonemet.models import build_model

    if args.net == "peak":
        print(json.dumps(tf_peak_gflops()), flush=True)
        return
    size = tuple(args.size)
    build = lambda: build_model(args.net, image_size=size)  # noqa: E731
    precision, jit, why = args.precision, args.jit == "on", []
    if args.precision == "auto":
        key = {"model": args.net, "options": {}, "size": list(size), "bench": "random inputs"}
        precision, jit = execution.choose("auto", args.jit, build, key, args.batch_size, log=why.append)
    stepper = execution.FitStepper((precision, jit), build, args.batch_size)
    import tensorflow as tf
    serve({"precision": precision, "jit": jit, "why": why[-1:], "warm_s": stepper.seconds_per_step(1),
           "flops": forward_flops(stepper.model), "version": f"TensorFlow {tf.__version__}"}, stepper.seconds_per_step)


def tf_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Best matmul GFLOP/s through TensorFlow on this CPU: float32, and bfloat16 where `auto` may choose it."""
    import tensorflow as tf

    from tfbonemet.execution import cpu_has_bf16

    out = {}
    for dtype in (tf.float32, tf.bfloat16) if cpu_has_bf16() else (tf.float32,):
        a, b = (tf.cast(tf.random.uniform((n, n)), dtype) for _ in range(2))
        matmul = tf.function(tf.matmul)
        matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        out[dtype.name] = 2 * n ** 3 / best / 1e9
    return out


def measure(net, size, args) -> dict:
    """Start the workers, then alternating rounds of timed windows; best seconds/step per side."""
    base = [sys.executable, __file__, "--worker", "tf", "--net", net, "--size", *map(str, size),
            "--batch-size", str(args.batch_size)]
    workers = {"torch": Worker([args.torch_python, str(HERE / "torch_nets.py"), "--net", net, "--size",
                                *map(str, size), "--batch-size", str(args.batch_size)],
                               env={"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}),
               "float32": Worker(base + ["--precision", "float32", "--jit", "off"])}
    batches = {}
    for spec in args.tf_variant:  # "label:KEY=VALUE,...": float32 with other environment or batch
        name, _, settings = spec.partition(":")
        env = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
        batches[name] = env.pop("batch", str(args.batch_size))
        workers[name] = Worker(base[:-1] + [batches[name], "--precision", "float32", "--jit", "off"], env=env)
    for name, w in workers.items():  # all warmed up before the probe times anything
        w.ready["batch"] = int(batches.get(name, args.batch_size))
    if args.auto:
        auto = Worker(base + ["--precision", "auto", "--jit", "auto"])
        auto.ready["batch"] = args.batch_size
        if (auto.ready["precision"], auto.ready["jit"]) == ("float32", False):
            auto.close()
            workers["float32"].ready["why"] = auto.ready["why"]
        else:
            workers["auto"] = auto
    steps = {name: max(1, round(args.window / w.ready["warm_s"])) for name, w in workers.items()}
    best = {name: float("inf") for name in workers}
    names = list(workers)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], workers[name].window(steps[name]))
    for w in workers.values():
        w.close()
    return {"best": best, "steps": steps, **{f"{k}_ready": w.ready for k, w in workers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                        help="single-view input size")
    parser.add_argument("--two-view-size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side's best window counts")
    parser.add_argument("--window", type=float, default=3.0, help="seconds per timed window (at least one step)")
    parser.add_argument("--no-auto", dest="auto", action="store_false", help="float32 only on the tfbonemet side")
    parser.add_argument("--tf-variant", action="append", default=[], metavar="LABEL:KEY=VALUE,...",
                        help="also time tfbonemet float32 with these environment variables (batch=N: per-step "
                             "batch), in the same rounds, e.g. onednn_off:TF_ENABLE_ONEDNN_OPTS=0")
    parser.add_argument("--torch-python", default=os.environ.get("TFBONEMET_TORCH_PYTHON", "/work/torchenv/bin/python"),
                        help="interpreter with torch, torchvision and monai (default $TFBONEMET_TORCH_PYTHON)")
    parser.add_argument("--worker", choices=("tf",), help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--jit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return tf_worker(args)

    started = time.time()
    print(f"{' '.join(sys.argv)}\nbatch {args.batch_size}, {args.rounds} alternating rounds of ~{args.window:g} s "
          f"windows, best counts; {os.cpu_count()} CPUs; load average before {os.getloadavg()}", flush=True)
    peak: dict[str, float] = {}
    rows = []
    for net in args.models:
        peak = best_peak(peak, peak_gflops())  # once per net: the least loaded measurement counts
        size = args.two_view_size if net == "two_view_net" else args.size
        row = {"net": net, "size": size, "load": os.getloadavg()[0], **measure(net, size, args)}
        print(json.dumps(row), flush=True)
        print("\n".join(table_rows(row, peak, args.tf_variant)), flush=True)
        rows.append(row)
    peak = best_peak(peak, peak_gflops())
    print(f"load average after {os.getloadavg()}; {(time.time() - started) / 60:.1f} min; matmul peak "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
          + f" (TensorFlow, best of {len(args.models) + 1} measurements); {rows[-1]['float32_ready']['version']}; "
          f"{rows[-1]['torch_ready']['version']}\n")
    print(TABLE_HEAD)
    for row in rows:
        print("\n".join(table_rows(row, peak, args.tf_variant)))
    for row in rows:
        print(f"{row['net']}: {' '.join(row.get('auto_ready', row['float32_ready']).get('why', []))}")


def peak_gflops() -> dict:
    worker = Worker([sys.executable, __file__, "--worker", "tf", "--net", "peak", "--size", "0", "0"])
    worker.close()
    return worker.ready


def best_peak(*measurements: dict) -> dict:
    """Per dtype, the highest GFLOP/s measured: load from other processes only ever lowers it."""
    return {k: max(m.get(k, 0.0) for m in measurements) for m in measurements for k in m}


TABLE_HEAD = ("| net | input | counterpart | tfbonemet float32 | auto choice | tfbonemet auto | torch float32 | "
              "ratio float32 | ratio auto | % peak float32 | % peak auto | % peak torch |\n"
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")


def table_rows(row, peak, variants=()) -> list[str]:
    """Markdown rows of one net: img/s (studies/s for two-view), ratios to torch, % of the matmul peak at the
    precision each side used (torch: float32), then one row per `--tf-variant`."""
    f32 = row["float32_ready"]
    ready = {name: row.get(f"{name}_ready", f32) for name in row["best"]}
    rate = {name: ready[name].get("batch", 16) / s for name, s in row["best"].items()}
    auto_name = "auto" if "auto" in rate else "float32"
    auto = ready[auto_name]
    pct = {name: 100 * 3 * f32["flops"] * r / 1e9
           / peak["bfloat16" if "bfloat16" in ready[name].get("precision", "") else "float32"]
           for name, r in rate.items()}
    lines = [f"| {row['net']} | {row['size'][0]}x{row['size'][1]} | {row['torch_ready']['label']} | "
             f"{rate['float32']:.1f} | {auto['precision']}, XLA {'on' if auto['jit'] else 'off'} | "
             f"{rate[auto_name]:.1f} | {rate['torch']:.1f} | {rate['float32'] / rate['torch']:.2f} | "
             f"{rate[auto_name] / rate['torch']:.2f} | {pct['float32']:.0f} | {pct[auto_name]:.0f} | "
             f"{pct['torch']:.0f} |"]
    for spec in variants:
        name = spec.partition(":")[0]
        lines.append(f"| {row['net']}: float32 with {spec.partition(':')[2]} | | | {rate[name]:.1f} | | | | "
                     f"{rate[name] / rate['torch']:.2f} | | {pct[name]:.0f} | | |")
    return lines


if __name__ == "__main__":
    main()
