"""bench/bench_monai.py's options, scheduling, rows and worker protocol, with fake workers (no TensorFlow, no torch)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_monai  # noqa: E402


def fake_worker(seconds_per_step: float, log: Path | None = None, label: str = "fake") -> bench_monai.Worker:
    """A real worker process serving `serve`: warm step `seconds_per_step`, every window that too.

    With `log`, it appends "start <pid>" when it starts and "stop <pid>" as it exits.
    """
    code = ("import os, sys; sys.path.insert(0, 'bench'); from bench_monai import serve\n"
            f"log = {str(log) if log else None!r}\n"
            "def note(what):\n"
            "    if log:\n"
            "        open(log, 'a').write(f'{what} {os.getpid()}\\n')\n"
            "note('start')\n"
            f"serve({{'label': {label!r}, 'warm_s': {seconds_per_step!r}}}, lambda steps: {seconds_per_step!r})\n"
            "note('stop')\n")
    return bench_monai.Worker([sys.executable, "-c", code])


def test_defaults_and_options():
    args = bench_monai.parse_args([])
    assert args.models == list(bench_monai.NETS) and args.precisions == ["float32", "bfloat16"]
    assert (args.rounds, args.batch_size, args.steps, args.xla, args.torch_env) == (3, 16, 0, False, [])
    args = bench_monai.parse_args(["--models", "two_view_net", "--precisions", "bfloat16", "--rounds", "1",
                                   "--steps", "2", "--torch-env", "OMP_WAIT_POLICY=PASSIVE", "--xla"])
    assert (args.models, args.precisions, args.rounds, args.steps) == (["two_view_net"], ["bfloat16"], 1, 2)
    assert args.torch_env == ["OMP_WAIT_POLICY=PASSIVE"] and args.xla


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--steps", "-1"], ["--torch-env", "PASSIVE"],
                                  ["--precisions", "float16"], ["--models", "unet"]])
def test_bad_options_are_refused(argv):
    with pytest.raises(SystemExit):
        bench_monai.parse_args(argv)


def test_torch_runs_at_its_defaults_unless_asked():
    """Inherited OpenMP/MKL settings are removed from torch's worker; an explicit --torch-env is set."""
    assert bench_monai.torch_env([]) == dict.fromkeys(("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    assert bench_monai.torch_env(["OMP_WAIT_POLICY=PASSIVE"])["OMP_WAIT_POLICY"] == "PASSIVE"


def test_worker_env_none_removes_a_variable(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    code = "import os, json; print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY')}))"
    with bench_monai.Worker([sys.executable, "-c", code], env={"OMP_WAIT_POLICY": None}) as worker:
        assert worker.ready == {"omp": None}
    with bench_monai.Worker([sys.executable, "-c", code]) as worker:
        assert worker.ready == {"omp": "PASSIVE"}


def test_worker_argv_same_precision_on_both_sides():
    args = bench_monai.parse_args(["--torch-python", "/t/python"])
    tf = bench_monai.worker_argv("tfbonemet", "densenet121", (128, 128), "bfloat16", args)
    torch = bench_monai.worker_argv("torch", "densenet121", (128, 128), "bfloat16", args)
    assert tf[tf.index("--precision") + 1] == "mixed_bfloat16" and tf[tf.index("--jit") + 1] == "off"
    assert torch[0] == "/t/python" and torch[torch.index("--precision") + 1] == "bfloat16"
    assert tf[tf.index("--size"):tf.index("--precision")] == torch[torch.index("--size"):torch.index("--precision")]


def test_schedule_alternates_which_side_goes_first():
    assert bench_monai.schedule(3) == [(0, "tfbonemet"), (0, "torch"), (1, "torch"), (1, "tfbonemet"),
                                       (2, "tfbonemet"), (2, "torch")]


def test_measure_never_runs_two_workers_at_once(tmp_path):
    """Each worker has exited before the next one starts; best window per side; one fresh worker per visit."""
    log = tmp_path / "workers.log"
    speed = {"tfbonemet": 0.5, "torch": 1.0}
    started = []

    def start(side):
        assert all(w.proc.poll() is not None for w in started), "a worker is still running"
        started.append(fake_worker(speed[side], log, label=side))
        return started[-1]

    out = bench_monai.measure(start, 2, lambda ready: 3)
    assert out["best"] == {"tfbonemet": 0.5, "torch": 1.0}
    assert out["ready"]["torch"]["label"] == "torch"
    assert len(started) == 4 and all(w.proc.returncode == 0 for w in started)
    events = log.read_text().split("\n")[:-1]
    assert [e.split()[0] for e in events] == ["start", "stop"] * 4  # every worker stopped before the next started
    assert [e.split()[1] for e in events[::2]] == [e.split()[1] for e in events[1::2]]
    assert len(out["load"]) == 2 and out["load"][0] <= out["load"][1]


def test_measure_closes_a_worker_that_fails():
    workers = []

    def start(side):
        workers.append(bench_monai.Worker([sys.executable, "-c", "raise SystemExit(3)"]))
        return workers[-1]

    with pytest.raises(bench_monai.WorkerFailed, match="exit 3"):
        bench_monai.measure(start, 2, lambda ready: 1)
    assert len(workers) == 1 and workers[0].proc.returncode == 3


def row(precision="float32", **extra):
    """densenet121: tfbonemet 0.5 s/step, torch 1.0 s/step at batch 16."""
    return {"net": "densenet121", "size": [128, 128], "precision": precision, "batch": 16, "xla": False,
            "torch_env": [], "best": {"tfbonemet": 0.5, "torch": 1.0}, "load": [0.12, 2.05],
            "ready": {"torch": {"label": "monai.networks.nets.DenseNet121"}}, **extra}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_float32_row():
    """32 images/s against 16: ratio 2.00, both at float32, and the load seen."""
    c = cells(bench_monai.table_row(row()))
    assert len(c) == len(cells(bench_monai.TABLE_HEAD.splitlines()[0]))
    assert c == ["densenet121", "128x128", "monai.networks.nets.DenseNet121",
                 "Keras float32, XLA off / torch float32", "images", "32.0", "16.0", "2.00", "0.12-2.05"]


def test_bfloat16_row_names_both_sides_settings():
    c = cells(bench_monai.table_row(row("bfloat16", xla=True, torch_env=["OMP_WAIT_POLICY=PASSIVE"])))
    assert c[3] == "Keras mixed_bfloat16, XLA on / torch autocast bfloat16, OMP_WAIT_POLICY=PASSIVE"


def test_two_view_net_counts_studies():
    r = row(net="two_view_net", size=[512, 128], batch=8)
    r["best"] = {"tfbonemet": 0.25, "torch": 0.4}
    c = cells(bench_monai.table_row(r))
    assert c[4:8] == ["studies (2 views)", "32.0", "20.0", "1.60"]


def test_failed_row_keeps_the_columns():
    r = {k: v for k, v in row().items() if k not in ("best", "ready", "load")}
    c = cells(bench_monai.table_row({**r, "error": "worker torch_nets.py failed (exit 1)"}))
    assert len(c) == len(cells(bench_monai.TABLE_HEAD.splitlines()[0])) and c[5].startswith("failed: ")


def test_window_steps():
    assert bench_monai.window_steps({"warm_s": 0.5}, bench_monai.parse_args(["--window", "3"])) == 6
    assert bench_monai.window_steps({"warm_s": 9.0}, bench_monai.parse_args(["--window", "3"])) == 1
    assert bench_monai.window_steps({"warm_s": 0.5}, bench_monai.parse_args(["--steps", "2"])) == 2


def test_worker_protocol_round_trip():
    worker = fake_worker(0.5)
    assert worker.ready == {"label": "fake", "warm_s": 0.5}
    assert worker.window(3) == pytest.approx(0.5)
    worker.close()
    assert worker.proc.returncode == 0


def test_parent_imports_no_framework():
    code = ("import sys; sys.path.insert(0, 'bench'); import bench_monai; "
            "bench_monai.parse_args(['--models', 'two_view_net']); "
            "assert not {'tensorflow', 'torch', 'keras'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
