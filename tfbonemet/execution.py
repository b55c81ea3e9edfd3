"""How a run executes: dtype policy and XLA compilation (strategies: tfbonemet.tasks.train.distribute).

Which precision and compilation pay off depends on the model, the input size and the CPU
(bfloat16 is native only with AVX512_BF16/AMX: on an AVX2-only AMD EPYC, mixed_bfloat16 trained
two_view_net 8.8x slower than float32, so it is not even timed there; XLA helps some graphs and
hurts others), so `auto` does not guess on CPUs: it times real `fit` steps of each candidate at
the run's input size and batch, in alternating rounds, and keeps float32 without XLA unless
another candidate is clearly faster. The timings are cached per model, options, input size,
batch, CPU and TensorFlow version. A run too short to repay the probe keeps float32 untimed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfbonemet.data.synthetic import cache_root
from tfbonemet.io import atomic

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
JIT_MODES = ("on", "off", "auto")
PROBE_VERSION = 4  # bump when the timing method or the models' kernels change: older cached timings are then ignored
PROBE_ROUNDS = 5  # timed windows per candidate, taken in turn so load from other processes hits all alike
PROBE_WINDOW_S = 1.0  # aim of one timed window; at least MIN_WINDOW_STEPS steps
MIN_WINDOW_STEPS, MAX_WINDOW_STEPS = 1, 64
WARMUP_STEPS = 3  # untimed steps after tracing: the first steps after it still run slower
MIN_GAIN = 1.10  # leave float32 without XLA only for a >= 10 % gain on both the best and the median round
MAX_PROBE_SHARE = 0.25  # probe only if it costs at most this share of the run (its timings serve later runs too)

Candidate = tuple[str, bool]  # (precision, XLA on)
Stepper = Callable[[], float]  # one timed window -> seconds per step


@contextlib.contextmanager
def dtype_policy(precision: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def cpu_description() -> dict:
    """What makes timings of one machine valid for another: CPU model, bfloat16 support, usable cores."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 os.uname().machine)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "bf16": "avx512_bf16" in info or "amx_bf16" in info, "cores": cores}


def cpu_has_bf16() -> bool:
    """bfloat16 matmuls are native only with AVX512_BF16 or AMX; elsewhere they are emulated and slow."""
    return cpu_description()["bf16"]


def label(candidate: Candidate) -> str:
    return f"{candidate[0]}+{'xla' if candidate[1] else 'noxla'}"


def candidates(precision: str, jit: str) -> list[Candidate]:
    """(precision, jit) pairs worth timing on a CPU for the requested settings; the baseline comes first."""
    precisions = [precision] if precision != "auto" else ["float32"] + (["mixed_bfloat16"] if cpu_has_bf16() else [])
    if jit == "auto":
        # XLA is only probed alongside precision: with a fixed precision Keras' own CPU rule (off) holds.
        jits = [False, True] if precision == "auto" else [False]
    else:
        jits = [jit == "on"]
    return [(p, j) for p in precisions for j in jits]


def choose(precision: str, jit: str, build: Callable[[], keras.Model], probe_key: dict, batch_size: int,
           log=print, make_stepper: Callable[[Candidate], Stepper] | None = None,
           total_steps: int | None = None) -> tuple[str, bool]:
    """Resolve `auto` precision/jit: GPUs get mixed_float16 with XLA; CPUs the clearly fastest probed candidate.

    `make_stepper(candidate)` returns a warmed-up stepper (one call: seconds per step over one timed
    window); by default a `FitStepper` on `build`'s model. `total_steps` (the run's training steps)
    lets a short run skip the probe.
    """
    if has_gpu():
        chosen = ("mixed_float16" if precision == "auto" else precision, jit != "off")
        if "auto" in (precision, jit):
            log(f"Execution: GPU found: precision {chosen[0]}, XLA {'on' if chosen[1] else 'off'}")
        return chosen
    options = candidates(precision, jit)
    if len(options) == 1:
        if "auto" in (precision, jit):
            log(f"Execution: precision {options[0][0]}, XLA off (XLA on CPUs is only chosen by a --precision auto probe)")
        return options[0]
    make_stepper = make_stepper or (lambda candidate: FitStepper(candidate, build, batch_size))
    timings = probe(options, make_stepper, probe_key, batch_size, log, total_steps)
    if timings is None:
        return options[0]
    best, reason = fastest(timings, label(options[0]))
    log(f"Execution: chose {best} by timed probe: {reason}"
        + ("" if cpu_has_bf16() else "; bfloat16 not probed: this CPU has no AVX512_BF16/AMX"))
    p, j = best.split("+")
    return p, j == "xla"


def fastest(timings: dict[str, list[float]], baseline: str, min_gain: float = MIN_GAIN) -> tuple[str, str]:
    """The candidate to use and a one-line reason with every candidate's ms/step.

    Another candidate replaces the baseline only when it is at least `min_gain` times faster on its
    best round and on its median round: load from other processes only ever slows a round, so the
    best round is the cleanest figure, and the median guards against one lucky round.
    """
    best = {name: min(times) for name, times in timings.items()}
    median = {name: statistics.median(times) for name, times in timings.items()}
    clear = [name for name in timings if name != baseline and best[baseline] / best[name] >= min_gain
             and median[baseline] / median[name] >= min_gain]
    chosen = min(clear, key=best.get) if clear else baseline
    rounds = max(len(times) for times in timings.values())
    summary = ", ".join(f"{name} {best[name] * 1000:.1f} ms/step (median {median[name] * 1000:.1f})"
                        for name in sorted(timings, key=best.get))
    why = (f"{best[baseline] / best[chosen]:.2f}x faster than {baseline}" if chosen != baseline
           else f"no candidate >= {min_gain:.2f}x faster than {baseline} on best and median")
    return chosen, f"{why}; best of {rounds} rounds: {summary}"


def probe_path(probe_key: dict, batch_size: int, options: list[Candidate]) -> Path:
    """Cache file of one probe: model, options, input size, batch, candidates, CPU and library versions."""
    blob = json.dumps({**probe_key, "batch_size": batch_size, "candidates": [label(c) for c in options],
                       "tf": tf.__version__, "keras": keras.__version__, "probe": PROBE_VERSION,
                       **cpu_description()}, sort_keys=True, default=str)
    return cache_root() / "execution-probe" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def probe_seconds(candidates: int, seconds_per_step: float, rounds: int = PROBE_ROUNDS) -> float:
    """Rough cost of a probe: per candidate, building and tracing (a few steps), warm-up and the rounds."""
    window = max(PROBE_WINDOW_S, seconds_per_step)
    return candidates * (rounds * window + (3 + WARMUP_STEPS) * seconds_per_step)


def probe(options: list[Candidate], make_stepper, probe_key: dict, batch_size: int, log,
          total_steps: int | None = None, rounds: int = PROBE_ROUNDS) -> dict[str, list[float]] | None:
    """Seconds per step of each candidate in each round (cached): windows taken in turn, order rotated.

    None, untimed beyond one window of the baseline, when `total_steps` of the baseline would take
    less than 1 / MAX_PROBE_SHARE times the probe.
    """
    path = probe_path(probe_key, batch_size, options)
    if path.exists():
        log(f"Execution: using probe timings cached at {path}")
        return json.loads(path.read_text())
    steppers = {label(options[0]): make_stepper(options[0])}
    if total_steps is not None:
        step = steppers[label(options[0])]()
        cost, run = probe_seconds(len(options), step, rounds), total_steps * step
        if cost > MAX_PROBE_SHARE * run:
            log(f"Execution: {label(options[0])}, not probed: the run ({total_steps} steps, about {run:.0f} s) "
                f"is too short to repay a probe of {len(options)} settings (about {cost:.0f} s)")
            return None
    log(f"Execution: timing {len(options)} candidate settings on real training steps "
        f"({rounds} alternating rounds; cached afterwards) ...")
    steppers.update({label(c): make_stepper(c) for c in options[1:]})
    timings = alternate(steppers, rounds)
    atomic.write_json(atomic.make_dir(path.parent) / path.name, timings)
    return timings


def alternate(steppers: dict[str, Stepper], rounds: int) -> dict[str, list[float]]:
    """One timed window of every stepper per round, the order rotated each round."""
    timings: dict[str, list[float]] = {name: [] for name in steppers}
    names = list(steppers)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            timings[name].append(steppers[name]())
    return timings


def random_batch(model: keras.Model, batch_size: int, seed: int = 0):
    """Inputs in [0, 1] for every model input, and integer labels."""
    rng = np.random.default_rng(seed)
    x = {t.name.split(":")[0]: rng.random((batch_size, *t.shape[1:]), np.float32) for t in model.inputs}
    x = x if len(x) > 1 else next(iter(x.values()))
    return x, rng.integers(0, model.outputs[0].shape[-1], batch_size)


class _StepClock(keras.callbacks.Callback):
    """Start of the first step and end of the last: fit's set-up before the first step is not counted."""

    def __init__(self):
        super().__init__()
        self.start = self.end = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.end = time.perf_counter()


class FitStepper:
    """One candidate's model, compiled like `fit` compiles it and trained with `model.fit` on one
    in-memory batch, so the timed steps are the compiled train steps of a real run.

    Built and warmed up on construction (tracing, XLA compilation, WARMUP_STEPS steps), which also
    sizes the window: about PROBE_WINDOW_S seconds of steps.
    """

    def __init__(self, candidate: Candidate, build: Callable[[], keras.Model], batch_size: int):
        precision, jit = candidate
        with dtype_policy(precision):
            self.model = build()
            self.model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"], jit_compile=jit)
        self.data = tf.data.Dataset.from_tensors(random_batch(self.model, batch_size)).repeat()
        self.seconds_per_step(1)  # tracing (and XLA compilation)
        warm = self.seconds_per_step(WARMUP_STEPS)
        self.window_steps = min(MAX_WINDOW_STEPS, max(MIN_WINDOW_STEPS, math.ceil(PROBE_WINDOW_S / warm)))

    def seconds_per_step(self, steps: int) -> float:
        clock = _StepClock()
        self.model.fit(self.data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        return (clock.end - clock.start) / steps

    def __call__(self) -> float:
        return self.seconds_per_step(self.window_steps)
