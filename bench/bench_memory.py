"""Peak resident memory of `predict` and `data build` over N two-view studies (bench/README, "Memory under load").

    python bench/bench_memory.py --studies 1000 10000 [--work DIR]

Writes N pairs of 128x32 uint16 PNGs (`sN_ant.png` / `sN_post.png`) and a `manifest.csv` naming them,
trains one tiny two-view run on the phantom, then runs each command as a child process and reads its
peak RSS from `wait4` (the child alone, not this script). Prints a Markdown table and each wall time.
Run it at low priority on a shared machine (`nice -n 19`); the wall times are not speed figures.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLI = [sys.executable, "-m", "tfbonemet.cli"]


def write_studies(folder: Path, n: int, seed: int = 0) -> Path:
    """n two-view studies as 16-bit PNG pairs, one patient each, and their manifest.csv."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        paths = {}
        for view, suffix in (("anterior", "ant"), ("posterior", "post")):
            paths[view] = f"images/s{i}_{suffix}.png"
            Image.fromarray(rng.integers(0, 4000, (128, 32), dtype=np.uint16)).save(folder / paths[view])
        rows.append({**paths, "label": "metastasis" if i % 2 else "normal", "patient_id": f"P{i}"})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["anterior", "posterior", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def peak_mib(args: list[str], env: dict) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one tfbonemet command run as a child process."""
    start = time.monotonic()
    proc = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: tfbonemet {' '.join(args)}\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFBONEMET_SECRET": "bench-memory-secret"}
    run = work / "runs" / "tiny"
    if not run.exists():
        subprocess.run([*CLI, "fit", "--num-studies", "16", "--image-size", "64", "32", "--epochs", "1",
                        "--batch-size", "4", "--model-option", "filters=[8,16]", "--output-dir", str(work / "runs"),
                        "--run-name", "tiny"], env=env, check=True, stdout=subprocess.DEVNULL)
    rows = {"predict": {}, "data build": {}}
    for n in args.studies:
        source = work / f"studies-{n}"
        if not source.exists():
            write_studies(source, n)
        (work / f"p-{n}.csv").unlink(missing_ok=True)
        rows["predict"][n] = peak_mib(["predict", str(run), str(source / "images"), "-o", str(work / f"p-{n}.csv")],
                                      env)
        shutil.rmtree(work / f"tfds-{n}", ignore_errors=True)
        rows["data build"][n] = peak_mib(["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir",
                                          str(source), "--data-dir", str(work / f"tfds-{n}")], env)
        for command in rows:
            mib, seconds = rows[command][n]
            print(f"{command} over {n} studies: peak RSS {mib:.0f} MiB, {seconds:.0f} s", flush=True)
    print(f"\n| command | {' | '.join(f'{n:,} studies' for n in args.studies)} |")
    print("|---|" + "---|" * len(args.studies))
    for command, figures in rows.items():
        print(f"| `tfbonemet {command}` | {' | '.join(f'{figures[n][0]:.0f} MiB' for n in args.studies)} |")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
