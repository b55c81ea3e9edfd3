"""MirroredStrategy over two logical CPU devices: two replicas, global batch = per-replica batch x 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfbonemet.config import resolve
from tfbonemet.tasks.train.trainer import fit
fit(resolve(overrides=json.loads(sys.argv[1])), log=print)
"""


@pytest.mark.slow  # ~25 s; distributed training stays in CI through the two-process multi-worker test
def test_mirrored_strategy_trains_on_two_replicas(tmp_path):
    overrides = dict(num_studies=40, image_height=128, image_width=32, epochs=1, batch_size=4, strategy="mirrored",
                     model_options={"filters": [8, 16, 16]}, output_dir=str(tmp_path), run_name="mirrored")
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides)], env=os.environ.copy(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s), global batch 8" in result.stdout
    run_dir = tmp_path / "mirrored"
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "mirrored"
    assert "4/4" in result.stdout  # 28 training studies / global batch 8 -> 4 steps
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == 6 and 0 <= metrics["auc"] <= 1


def test_multi_worker_needs_a_cluster(monkeypatch):
    from tfbonemet.tasks.train import distribute
    from tfbonemet.errors import ConfigError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief()
    for broken, message in (('{"cluster": {"worker": ["a:1"]', "not valid JSON"), ('["a:1"]', "JSON object")):
        monkeypatch.setenv("TF_CONFIG", broken)
        for read in (distribute.is_chief, distribute.job_id):
            with pytest.raises(ConfigError, match=message):
                read()
