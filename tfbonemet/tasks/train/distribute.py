"""tf.distribute strategies for `fit`, and who in a cluster writes what.

`multi-worker` reads the cluster and this process's place in it from TF_CONFIG (docs/training.md).
Every worker reads the run directory on shared storage (its backups and history, to resume at the
same epoch); only the chief writes to it. Each worker builds its own input pipeline over its shard
of the data (tfbonemet.data.pipeline), with per-replica batches.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from tfbonemet.errors import ConfigError
from tfbonemet.vocab import STRATEGIES


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3's TensorFlow trainer gives it.

    The trainer reduces a whole input batch (a dict of per-replica tensors) to learn its shapes,
    which only MirroredStrategy accepts ("Attempt to convert a value ({'anterior': PerReplica ...})
    ... to a Tensor"), and averages per-replica scalar metrics with `axis=0` ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Nested values are reduced leaf by leaf, and a
    scalar's mean over axis 0 is its mean over the replicas, as under MirroredStrategy.
    """

    def reduce(self, reduce_op, value, axis):
        base = super().reduce

        def leaf(v):
            scalar = self.experimental_local_results(v)[0].shape.rank == 0
            return base(reduce_op, v, None if scalar else axis)
        return tf.nest.map_structure(leaf, value)


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
        return _multi_worker_strategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


@functools.cache
def _multi_worker_strategy() -> tf.distribute.Strategy:
    """One per process: collectives must be configured before TensorFlow runs its first op, so `fit`
    creates it before it reads any study, and training reuses it.

    Creating it waits inside TensorFlow's C++ until every worker has joined, holding the GIL: no Python
    code, signal handlers included, runs meanwhile, in any thread. So the workers first wait for each
    other here, in Python, where SIGTERM and Ctrl-C stop the command as everywhere else."""
    from tfbonemet import signals

    wait_for_peers()
    strategy = _MultiWorkerMirroredStrategy()
    signals.reclaim()  # TensorFlow's SIGTERM handler replaced Python's
    return strategy


def _task_and_cluster() -> tuple[dict, dict]:
    """TF_CONFIG's "task" (this process's type and index) and "cluster" (job -> addresses); empty when unset."""
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(tf_config, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with \"cluster\" and \"task\"")
    return tf_config.get("task") or {}, tf_config.get("cluster") or {}


def _addresses() -> tuple[str | None, list[str]]:
    """(this worker's address, the other workers' and chief's addresses) from TF_CONFIG."""
    task, cluster = _task_and_cluster()
    mine, peers = None, []
    for job in ("chief", "worker"):
        for index, address in enumerate(cluster.get(job, [])):
            if job == task.get("type") and index == task.get("index", 0):
                mine = address
            else:
                peers.append(address)
    return mine, peers


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _reachable(address: str, timeout: float = 0.5) -> bool:
    import socket
    import struct

    try:
        with socket.create_connection(_host_port(address), timeout=timeout) as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # no TIME_WAIT left
        return True
    except (OSError, ValueError):
        return False


def wait_for_peers(poll_s: float = 0.2) -> None:
    """Return once every other worker of the cluster in TF_CONFIG accepts connections on its address.

    Meanwhile this worker answers on its own address (a plain listening socket, closed before TensorFlow
    binds the port), so workers waiting for each other all see each other. A peer that has already gone
    on into TensorFlow answers from its gRPC server. If this worker's port cannot be bound here, the
    wait is left to TensorFlow (which reports the busy port itself)."""
    import socket
    import struct
    import time

    mine, peers = _addresses()
    if not peers:
        return
    listener = None
    if mine:
        try:
            listener = socket.socket(socket.AF_INET6 if ":" in _host_port(mine)[0] else socket.AF_INET)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("", _host_port(mine)[1]))
            listener.listen(16)
            listener.setblocking(False)
        except (OSError, ValueError):
            if listener is not None:
                listener.close()
            return
    try:
        waiting, told = list(peers), False
        while waiting:
            while listener is not None:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            waiting = [address for address in waiting if not _reachable(address)]
            if waiting:
                if not told:
                    print(f"Waiting for {len(waiting)} other worker(s) of the job to start: {', '.join(waiting)}",
                          flush=True)
                    told = True
                time.sleep(poll_s)
    finally:
        if listener is not None:
            listener.close()


def is_chief() -> bool:
    """True unless TF_CONFIG makes this process a non-chief worker (which must not write the run directory)."""
    task, cluster = _task_and_cluster()
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def job_id() -> str:
    """A name every worker of one multi-worker job shares and another job's workers do not: a digest of the
    cluster in TF_CONFIG (its hosts and ports)."""
    import hashlib

    _, cluster = _task_and_cluster()
    return "job-" + hashlib.sha256(json.dumps(cluster, sort_keys=True).encode()).hexdigest()[:16]


def join_job(config) -> None:
    """A worker of a multi-worker job (the chief too) is refused at once when another job, or a single
    tfbonemet process, holds the run directory it names (--run-name under --output-dir)."""
    from pathlib import Path

    from tfbonemet.io.lock import join
    from tfbonemet.tasks.train.run_dir import RUN_LOCK

    if not config.run_name:
        raise ConfigError("strategy multi-worker needs --run-name: every worker must name the same run directory")
    run_dir = Path(config.output_dir) / config.run_name
    join(run_dir / RUN_LOCK, f"run {run_dir}", job_id())


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def distribute_input(strategy: tf.distribute.Strategy,
                     make: Callable[[int, int, int], tf.data.Dataset]) -> tf.data.Dataset:
    """The training input of `strategy`: `make(num_shards, shard_index, replicas)` builds one input
    pipeline (one per worker) over its shard of the data, batched per replica for `replicas` local
    replicas; without a strategy, the one pipeline of the whole data."""
    if not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return make(1, 0, 1)
    return strategy.distribute_datasets_from_function(
        lambda context: make(context.num_input_pipelines, context.input_pipeline_id,
                             strategy.num_replicas_in_sync // context.num_input_pipelines))


def local_forward(model):
    """The model's inference pass as one tf.function, outside any strategy (traced once per batch shape)."""
    return tf.function(lambda x: model(x, training=False), jit_compile=bool(model.jit_compile),
                       reduce_retracing=True)


def predict(model, dataset: tf.data.Dataset, forward=None) -> np.ndarray:
    """The model's outputs over `dataset`, computed by this process alone (`forward`: a cached
    `local_forward(model)`).

    Under MultiWorkerMirroredStrategy Keras' `predict` is a collective over data sharded between
    the workers; the validation AUC and the chief's final metrics need the whole split in order.
    """
    if not is_multi_worker(model.distribute_strategy):
        return model.predict(dataset, verbose=0)
    forward = forward or local_forward(model)
    return np.concatenate([np.asarray(forward(x), np.float32) for x, *_ in dataset])


def total(strategy: tf.distribute.Strategy, value: float) -> float:
    """The sum of every worker's `value` (one all-reduce); `value` itself without workers."""
    if not is_multi_worker(strategy):
        return value
    local = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(value, tf.float64))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None))


def chief_value(strategy: tf.distribute.Strategy, value: float) -> float:
    """The chief's `value` on every worker: the figure the chief's history and saved model go with,
    and one number all workers act on (early stopping). Workers' BatchNorm moving statistics,
    updated from their own batches, can differ, and with them their validation figures."""
    return total(strategy, value if not is_multi_worker(strategy) or is_chief() else 0.0)
