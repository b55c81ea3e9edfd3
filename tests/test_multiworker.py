"""Multi-worker training with real worker processes on loopback ports, each with its TF_CONFIG."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

TRAIN = "import json, sys; from tfbonemet.config import resolve; from tfbonemet.tasks.train.trainer import fit; " \
        "fit(resolve(overrides=json.loads(sys.argv[1])))"
RESUME = "from tfbonemet.cli import main; main()"
TINY = dict(num_studies=48, image_height=64, image_width=32, batch_size=8, strategy="multi-worker",
            model_options={"filters": [8, 16, 16]}, run_name="mw")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Two worker processes of one run; `start(i)` (re)starts worker i with its TF_CONFIG, as a cluster
    manager would after a failure, with the run's own command or with `fit --resume RUN_DIR`.
    Output goes to worker-i-START.log files under `logs`."""

    def __init__(self, overrides: dict, logs):
        self.overrides, self.logs = overrides, logs
        self.hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        self.procs: list[subprocess.Popen | None] = [None, None]
        self.starts = [0, 0]
        self.resume: list[str | None] = [None, None]

    def start(self, index: int, resume: str | None = None) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": {"worker": self.hosts}, "task": {"type": "worker", "index": index}})}
        self.starts[index] += 1
        self.resume[index] = resume = resume or self.resume[index]
        command = ["-c", RESUME, "fit", "--resume", resume] if resume else ["-c", TRAIN, json.dumps(self.overrides)]
        with (self.logs / f"worker-{index}-{self.starts[index]}.log").open("w") as log:
            self.procs[index] = subprocess.Popen([sys.executable, *command], env=env, stdout=log,
                                                 stderr=subprocess.STDOUT)

    def output(self, index: int) -> str:
        return (self.logs / f"worker-{index}-{self.starts[index]}.log").read_text()

    def wait(self, timeout: float, restart_failed: bool = False, max_starts: int = 4) -> list[int]:
        """Exit codes once both workers have ended (restarting failed ones if asked)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [p.poll() for p in self.procs]
            for i, code in enumerate(codes):
                if restart_failed and code not in (None, 0) and self.starts[i] < max_starts:
                    self.start(i)
                    codes[i] = None
            if None not in codes:
                return codes
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"workers still running after {timeout} s:\n" + self.output(0)[-3000:])

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def history(run_dir) -> list[dict]:
    with (run_dir / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_worker_shards_split_the_studies_and_draw_their_own_augmentation():
    """Shard i of n holds studies i, i+n, ...: together every study once; batch k of shard i is
    augmented as the stream's batch k * n + i, so the shards never share a transform."""
    import numpy as np
    import tensorflow as tf

    from tfbonemet.data.pipeline import BatchConfig, batch_pipeline

    identity = lambda features: features  # noqa: E731
    ds = tf.data.Dataset.from_tensor_slices(({"x": np.arange(10, dtype=np.float32)[:, None]}, np.arange(10)))
    seen = []
    for index in range(2):
        config = BatchConfig(batch_size=2, num_shards=2, shard_index=index)
        batches = list(batch_pipeline(ds, identity, config, training=True, seed=1, labels=np.arange(10),
                                      augment=lambda f, seed: {"x": f["x"] + 100.0 * tf.cast(seed[1], tf.float32)})
                       .as_numpy_iterator())
        labels = np.concatenate([y for _, y in batches])
        assert sorted(labels) == list(range(index, 10, 2))
        offsets = [int((x["x"][:, 0] - y)[0]) // 100 for x, y in batches]
        assert offsets == [k * 2 + index for k in range(len(batches))]
        options = batch_pipeline(ds, identity, config, training=False).options()
        assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
        seen += list(labels)
    assert sorted(seen) == list(range(10))


def test_two_workers_train_one_run_directory(tmp_path):
    out = tmp_path / "runs"
    cluster = Cluster({**TINY, "epochs": 2, "output_dir": str(out)}, tmp_path)
    try:
        cluster.start(0)
        cluster.start(1)
        codes = cluster.wait(timeout=300)
    finally:
        cluster.stop()
    assert codes == [0, 0], cluster.output(0)[-3000:] + cluster.output(1)[-3000:]
    assert "2 replica(s), global batch 16" in cluster.output(0)
    assert [p.name for p in out.iterdir()] == ["mw"]  # the other worker wrote nowhere shared
    run_dir = out / "mw"
    assert {"model.keras", "config.json", "preprocessor.json", "history.csv", "metrics.json", "logs"} <= \
        {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "backup").exists() and not (run_dir / "best.keras").exists()
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert 0 <= float(row["val_auc"]) <= 1 and float(row["val_loss"]) > 0 and 0 <= float(row["val_accuracy"]) <= 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["n"] == 7
    # the history holds the chief's figures: the saved best epoch's AUC is the best one logged
    assert metrics["auc"] == pytest.approx(max(float(r["val_auc"]) for r in rows), abs=1e-6)
    assert "Worker finished; the chief writes" in cluster.output(1)


@pytest.mark.slow
def test_killed_worker_restarts_and_the_run_completes_without_losing_or_repeating_epochs(tmp_path):
    """Worker 1 is killed after the first backup and restarted with `fit --resume`; the chief, whose
    collectives then fail, is restarted (as a cluster manager does) with the run's own command."""
    epochs = 4
    out = tmp_path / "runs"
    cluster = Cluster({**TINY, "epochs": epochs, "output_dir": str(out)}, tmp_path)
    marker = out / "mw" / "backup" / "train" / "training_metadata.json"
    try:
        cluster.start(0)
        cluster.start(1)
        deadline = time.monotonic() + 300
        while not marker.exists() or json.loads(marker.read_text() or "{}").get("epoch", 0) < 1:
            assert time.monotonic() < deadline and None in [p.poll() for p in cluster.procs], cluster.output(0)[-3000:]
            time.sleep(0.05)
        cluster.procs[1].send_signal(signal.SIGKILL)
        cluster.procs[1].wait()
        cluster.start(1, resume=str(out / "mw"))
        codes = cluster.wait(timeout=600, restart_failed=True)
    finally:
        cluster.stop()
    assert codes == [0, 0], cluster.output(0)[-3000:] + cluster.output(1)[-3000:]
    assert cluster.starts[0] >= 2 and cluster.starts[1] >= 2
    assert "Continuing" in cluster.output(0) and "Resuming stage train at epoch" in cluster.output(1)
    run_dir = out / "mw"
    assert [int(r["epoch"]) for r in history(run_dir)] == list(range(epochs))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == epochs
    assert not (run_dir / "backup").exists()


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_worker_waiting_for_its_peer_stops_on_sigterm(tmp_path):
    """The chief of a two-worker job whose other worker never starts waits for it (TensorFlow's own wait
    holds the GIL: no Python signal handler would run); SIGTERM then stops it as it stops any command:
    one line, exit status 143, no traceback, no lock file and no run directory left."""
    out = tmp_path / "runs"
    hosts = Cluster({}, tmp_path).hosts
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 0}})}
    command = [sys.executable, "-c", RESUME, "fit", "--strategy", "multi-worker", "--num-studies", "48",
               "--image-size", "64", "32", "--batch-size", "8", "--run-name", "mw", "--output-dir", str(out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not listening(hosts[0]):  # up and waiting for worker 1 (which never starts)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"still running 120 s after SIGTERM:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Waiting for 1 other worker(s) of the job to start: " + hosts[1] in stdout
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: stopped by SIGTERM; nothing half-written was kept"], stderr[-3000:]
    assert "Traceback" not in stderr + stdout
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".lock")] and not (out / "mw").exists()
