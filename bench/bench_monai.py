"""Every registered tfbonemet net against its MONAI / torchvision / plain-torch counterpart, like for like.

    python bench/bench_monai.py                                   # every registered net, float32 and bfloat16
    python bench/bench_monai.py --models two_view_net densenet121 --rounds 3
    python bench/bench_monai.py --models two_view_net --two-view-size 168 64 --precisions float32
    TFBONEMET_TORCH_PYTHON=/work/torchenv/bin/python python bench/bench_monai.py

Both sides train the same net at the same precision: batch 16, Adam 1e-4, random in-memory inputs.
float32: Keras' float32 policy against torch float32. bfloat16: Keras' `mixed_bfloat16` policy
against `torch.autocast("cpu", dtype=torch.bfloat16)` around forward and loss, as torch users write
it (float32 weights and optimizer on both sides). tfbonemet runs compiled `fit` steps without XLA
(`--xla` turns it on, and the rows say so); torch runs eager, NCHW, at its defaults: as many
threads as cores and OpenMP's own wait policy (inherited OMP_WAIT_POLICY, OMP_NUM_THREADS and
MKL_NUM_THREADS are dropped; `--torch-env KEY=VALUE` sets one, and the rows say so).

One framework at a time (TensorFlow and torch 2.x in one process segfault, and two busy workers
would share the cores): per round, each side's worker is started, warmed up (tracing, then 3
steps), timed over one window and stopped before the other side's worker starts. The sides take
turns first (tfbonemet then torch, then torch then tfbonemet, ...) so a slow drift in load from
other processes hits both; each side's best window counts. This process imports neither framework.

Output: one row per net and precision with samples/s of both sides (two_view_net: studies/s, a
study being two views; others: images/s), tfbonemet / torch, and the 1-minute load average read
before each worker started (min-max; the previous worker's own load decays in it). Printed, never
asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETS = ("two_view_net", "dscint", "vgg16", "yim_vgg16", "resnet50", "densenet121", "xception", "inception_v3",
        "efficientnetv2_s")  # tfbonemet.models.MODELS, listed here so this process never imports TensorFlow
SIDES = ("tfbonemet", "torch")
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
TORCH_PRECISION = {"float32": "float32", "bfloat16": "autocast bfloat16"}
TORCH_DEFAULTS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # dropped: torch at its own defaults


class WorkerFailed(RuntimeError):
    pass


class Worker:
    """A timing process: one JSON line when ready (warmed up), then one JSON line per `N` (steps) sent.

    Started on construction; `env` entries set to None are removed from the inherited environment.
    A context manager: leaving it closes the worker and waits for its exit.
    """

    def __init__(self, argv, env=None):
        env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE.parent,
                                     env={k: v for k, v in env.items() if v is not None})
        self._ready = None

    @property
    def ready(self) -> dict:
        if self._ready is None:
            self._ready = self._read()
        return self._ready

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerFailed(f"worker {' '.join(map(str, self.proc.args[1:6]))} failed (exit {self.proc.wait()})")
        return json.loads(line)

    def window(self, steps: int) -> float:
        """Seconds per step over `steps` timed steps."""
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return self._read()["s"]

    def close(self):
        """End of input, then wait for the exit (killed if it does not come): no worker outlives its turn."""
        try:
            self.proc.stdin.close()
        except OSError:  # it has already gone
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(ready: dict, seconds_per_step) -> None:
    """The worker's side of `Worker`: `ready` as the first line, then one timed window per request."""
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        print(json.dumps({"s": seconds_per_step(int(line))}), flush=True)


def tf_worker(args) -> None:
    """The tfbonemet side: `execution.FitStepper` (compiled `fit` steps, warmed up) under a Keras dtype policy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from tfbonemet import execution
    from tfbonemet.models import build_model

    size, jit = tuple(args.size), args.jit == "on"
    stepper = execution.FitStepper((args.precision, jit), lambda: build_model(args.net, image_size=size),
                                   args.batch_size)
    serve({"policy": args.precision, "jit": jit, "warm_s": stepper.seconds_per_step(1),
           "native_bf16": execution.cpu_has_bf16(), "version": f"TensorFlow {tf.__version__}"},
          stepper.seconds_per_step)


def schedule(rounds: int, sides=SIDES) -> list[tuple[int, str]]:
    """(round, side) visits in order: every side once per round, the order reversed on odd rounds."""
    return [(r, side) for r in range(rounds) for side in (sides if r % 2 == 0 else sides[::-1])]


def measure(start, rounds: int, steps_for, sides=SIDES) -> dict:
    """Best seconds/step per side over `schedule(rounds, sides)`.

    `start(side)` returns a new `Worker`; `steps_for(ready)` the steps of its timed window. Each visit
    starts a worker, waits for it to be warmed up, times one window and closes it (waiting for its
    exit) before the next visit starts one: never two workers at once.
    """
    best, ready, loads = {side: float("inf") for side in sides}, {}, []
    for _, side in schedule(rounds, sides):
        loads.append(os.getloadavg()[0])
        with start(side) as worker:
            ready[side] = worker.ready
            best[side] = min(best[side], worker.window(steps_for(worker.ready)))
    return {"best": best, "ready": ready, "load": [min(loads), max(loads)]}


def worker_argv(side: str, net: str, size, precision: str, args) -> list[str]:
    common = ["--net", net, "--size", *map(str, size), "--batch-size", str(args.batch_size)]
    if side == "torch":
        return [args.torch_python, str(HERE / "torch_nets.py"), *common, "--precision", precision]
    return [sys.executable, __file__, "--worker", "tf", *common, "--precision", KERAS_POLICY[precision],
            "--jit", "on" if args.xla else "off"]


def torch_env(settings) -> dict:
    """The torch worker's environment changes: torch's defaults, then each explicit KEY=VALUE."""
    return {**dict.fromkeys(TORCH_DEFAULTS), **dict(kv.split("=", 1) for kv in settings)}


def window_steps(ready: dict, args) -> int:
    return args.steps or max(1, round(args.window / ready["warm_s"]))


def run_row(net: str, size, precision: str, args) -> dict:
    """One net at one precision, both sides; a worker that fails leaves the row's `error`."""
    env = {"torch": torch_env(args.torch_env), "tfbonemet": None}
    start = lambda side: Worker(worker_argv(side, net, size, precision, args), env=env[side])  # noqa: E731
    row = {"net": net, "size": list(size), "precision": precision, "batch": args.batch_size, "xla": args.xla,
           "torch_env": args.torch_env}
    try:
        return {**row, **measure(start, args.rounds, lambda ready: window_steps(ready, args))}
    except WorkerFailed as e:
        return {**row, "error": str(e)}


TABLE_HEAD = ("| net | input | counterpart | precision: tfbonemet / torch | counted | tfbonemet /s | torch /s | "
              "tfbonemet / torch | load avg |\n|---|---|---|---|---|---:|---:|---:|---|")


def table_row(row: dict) -> str:
    """One markdown row: samples/s of each side (batch / best seconds per step), their ratio, the load seen."""
    net, (h, w) = row["net"], row["size"]
    keras = f"Keras {KERAS_POLICY[row['precision']]}, XLA {'on' if row['xla'] else 'off'}"
    torch = f"torch {TORCH_PRECISION[row['precision']]}" + "".join(f", {kv}" for kv in row["torch_env"])
    counted = "studies (2 views)" if net == "two_view_net" else "images"
    if "error" in row:
        return f"| {net} | {h}x{w} | | {keras} / {torch} | {counted} | failed: {row['error']} | | | |"
    rate = {side: row["batch"] / s for side, s in row["best"].items()}
    return (f"| {net} | {h}x{w} | {row['ready']['torch']['label']} | {keras} / {torch} | {counted} | "
            f"{rate['tfbonemet']:.1f} | {rate['torch']:.1f} | {rate['tfbonemet'] / rate['torch']:.2f} | "
            f"{row['load'][0]:.2f}-{row['load'][1]:.2f} |")


def versions(rows: list[dict]) -> str:
    """The frameworks' versions and torch's threads, from the last row whose workers started."""
    ready = next((r["ready"] for r in reversed(rows) if "ready" in r), None)
    if ready is None:
        return "no worker started"
    bf16 = "" if ready["tfbonemet"]["native_bf16"] else "; this CPU has no AVX512_BF16/AMX: bfloat16 is emulated"
    return f"{ready['tfbonemet']['version']}; {ready['torch']['version']}{bf16}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--precisions", nargs="+", default=list(KERAS_POLICY), choices=list(KERAS_POLICY),
                        help="one row per net and precision, both sides at it")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                        help="single-view input size")
    parser.add_argument("--two-view-size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds, one fresh worker and one timed window per side each; best counts")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds per timed window, sized from a warm step (at least one step)")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed window instead of --window")
    parser.add_argument("--xla", action="store_true", help="tfbonemet with XLA (jit_compile) on")
    parser.add_argument("--torch-env", action="append", default=[], metavar="KEY=VALUE",
                        help="set in torch's worker, e.g. OMP_WAIT_POLICY=PASSIVE (default: torch's own defaults)")
    parser.add_argument("--torch-python", default=os.environ.get("TFBONEMET_TORCH_PYTHON", "/work/torchenv/bin/python"),
                        help="interpreter with torch, torchvision and monai (default $TFBONEMET_TORCH_PYTHON)")
    parser.add_argument("--worker", choices=("tf",), help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--jit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 0 or args.window <= 0 or args.batch_size < 1:
        parser.error("--rounds and --batch-size must be at least 1, --steps at least 0, --window positive")
    for kv in args.torch_env:
        if "=" not in kv or not kv.partition("=")[0]:
            parser.error(f"--torch-env takes KEY=VALUE, not {kv!r}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return tf_worker(args)

    started = time.time()
    timing = f"{args.steps}-step" if args.steps else f"~{args.window:g} s"
    print(f"{' '.join(sys.argv)}\nbatch {args.batch_size}, {args.rounds} alternating rounds of one fresh worker and "
          f"one {timing} window per side, best counts; {os.cpu_count()} CPUs; load average before "
          f"{os.getloadavg()}", flush=True)
    rows = []
    for net in args.models:
        size = args.two_view_size if net == "two_view_net" else args.size
        for precision in args.precisions:
            row = run_row(net, size, precision, args)
            print(json.dumps(row), flush=True)
            print(table_row(row), flush=True)
            rows.append(row)
    print(f"load average after {os.getloadavg()}; {(time.time() - started) / 60:.1f} min; {versions(rows)}\n")
    print(TABLE_HEAD)
    print("\n".join(map(table_row, rows)))


if __name__ == "__main__":
    main()
