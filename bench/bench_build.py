"""Build throughput of the bone_scintigraphy TFDS builder on phantom DICOM, in studies per second.

    python bench/bench_build.py --num-studies 200 --size 1024 256

Writing the phantom DICOM is not timed; the figure covers indexing headers, decoding both views,
PNG-encoding 16-bit counts, writing and shuffling the TFRecords of all three splits.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-studies", type=int, default=200)
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 256), metavar=("H", "W"))
    parser.add_argument("--split-views", action="store_true", help="one file per view")
    parser.add_argument("--config", default="binary", choices=("binary", "multiclass"))
    args = parser.parse_args()

    import tensorflow_datasets as tfds

    from tfbonemet.data.phantom import BoneScanPhantom
    from tfbonemet.data.phantom_dicom import write_dataset
    from tfds_builders.bone_scintigraphy.bone_scintigraphy_dataset_builder import Builder

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as work:
        source, data_dir = Path(work) / "source", Path(work) / "tfds"
        phantom = BoneScanPhantom(shape=tuple(args.size), seed=0)
        start = time.perf_counter()
        write_dataset((phantom.study(i) for i in range(args.num_studies)), source, split_views=args.split_views)
        print(f"wrote {args.num_studies} phantom studies ({args.size[0]}x{args.size[1]}) "
              f"in {time.perf_counter() - start:.1f} s")
        builder = Builder(config=args.config, data_dir=str(data_dir))
        start, cpu_start = time.perf_counter(), time.process_time()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(source)))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        size_mb = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) / 1e6
    print(f"built {builder.info.full_name}: {builder.info.splits.total_num_examples} studies in {seconds:.1f} s "
          f"= {args.num_studies / seconds:.1f} studies/s ({cpu_seconds:.1f} s CPU, {size_mb:.0f} MB written, "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
