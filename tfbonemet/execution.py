"""How a run executes: dtype policy, XLA compilation and tf.distribute strategy.

Which precision and compilation pay off depends on the model and the device (measured on a
2-core AVX512_BF16 CPU: mixed_bfloat16 made DenseNet121 2.35x faster but a small CNN 0.73x;
XLA 1.38x and 0.3x), so `auto` does not guess on CPUs: it times a few training steps of each
candidate once and caches the winner per model, input size and machine.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfbonemet.data.synthetic import cache_root
from tfbonemet.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
JIT_MODES = ("on", "off", "auto")
STRATEGIES = ("default", "mirrored", "multi-worker")
PROBE_STEPS = 3


@contextlib.contextmanager
def dtype_policy(precision: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`multi-worker` reads the cluster from TF_CONFIG (see docs/training.md)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":  # every local GPU; without GPUs every logical CPU device (one unless configured)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("strategy multi-worker needs TF_CONFIG describing the cluster and this worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """True unless TF_CONFIG makes this process a non-chief worker (which must not own the run directory)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def cpu_has_bf16() -> bool:
    """bfloat16 matmuls are native only with AVX512_BF16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def candidates(precision: str, jit: str) -> list[tuple[str, bool]]:
    """(precision, jit) pairs worth timing on a CPU for the requested settings."""
    precisions = [precision] if precision != "auto" else ["float32"] + (["mixed_bfloat16"] if cpu_has_bf16() else [])
    if jit == "auto":
        # XLA is only probed alongside precision: with a fixed precision Keras' own CPU rule (off) holds.
        jits = [False, True] if precision == "auto" else [False]
    else:
        jits = [jit == "on"]
    return [(p, j) for p in precisions for j in jits]


def choose(precision: str, jit: str, build: Callable[[], keras.Model], probe_key: dict, batch_size: int,
           log=print) -> tuple[str, bool]:
    """Resolve `auto` precision/jit: GPUs get mixed_float16 with XLA; CPUs the fastest probed candidate."""
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
    timings = probe(options, build, probe_key, batch_size, log)
    best = min(timings, key=timings.get)
    summary = ", ".join(f"{k} {v * 1000:.0f} ms/step" for k, v in sorted(timings.items(), key=lambda kv: kv[1]))
    log(f"Execution: chose {best} by timed probe ({summary})")
    p, j = best.split("+")
    return p, j == "xla"


def probe(options, build, probe_key: dict, batch_size: int, log) -> dict[str, float]:
    """Seconds per training step of each option on random inputs; cached under the cache dir."""
    key_blob = json.dumps({**probe_key, "batch_size": batch_size, "tf": tf.__version__,
                           "keras": keras.__version__, "cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count()}, sort_keys=True, default=str)
    key = hashlib.sha256(key_blob.encode()).hexdigest()[:16]
    path = cache_root() / "execution-probe" / f"{key}.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    names = {f"{p}+{'xla' if j else 'noxla'}": (p, j) for p, j in options}
    if all(name in cached for name in names):
        log(f"Execution: using probe timings cached at {path}")
        return {name: cached[name] for name in names}
    log(f"Execution: timing {len(names)} candidate settings ({PROBE_STEPS} steps each; cached afterwards) ...")
    for name, (precision, jit) in names.items():
        if name not in cached:
            cached[name] = time_train_steps(precision, jit, build, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "w") as fh:
        json.dump(cached, fh, indent=2)
    os.replace(tmp, path)
    return {name: cached[name] for name in names}


def time_train_steps(precision: str, jit: bool, build, batch_size: int, steps: int = PROBE_STEPS) -> float:
    """Seconds per training step on random inputs, after two untimed steps (tracing, XLA compilation)."""
    with dtype_policy(precision):
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit)
    rng = np.random.default_rng(0)
    x = {t.name: rng.random((batch_size, *t.shape[1:]), np.float32) for t in model.inputs}
    x = x if len(x) > 1 else next(iter(x.values()))
    y = rng.integers(0, model.outputs[0].shape[-1], batch_size)
    model.train_on_batch(x, y)  # build, trace (and XLA-compile)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps
