"""tf.distribute strategies for `fit` and who in a cluster owns the run directory.

`multi-worker` reads the cluster and this process's place in it from TF_CONFIG (docs/training.md).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from tfbonemet.errors import ConfigError
from tfbonemet.vocab import STRATEGIES


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
