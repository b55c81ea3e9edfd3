"""Training steps with Keras' own batch normalisation against tfbonemet's fused kernel, same net, same process.

`build_model` fuses every BatchNormalization (tfbonemet/models/batch_norm.py); the registry's builder
alone gives the plain Keras layers. Both are timed as the precision probe times them
(`execution.FitStepper`: compiled `fit` steps on one in-memory batch, Adam), in alternating rounds so
load from other processes hits both alike; the best round counts.

    python bench/bench_batch_norm.py --models two_view_net densenet121 resnet50 --precisions float32 mixed_bfloat16

Printed, never asserted.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["two_view_net", "densenet121"])
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                        help="single-view input size")
    parser.add_argument("--two-view-size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    parser.add_argument("--precisions", nargs="+", default=["float32"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import keras

    from tfbonemet import execution
    from tfbonemet.models import build_model
    from tfbonemet.models.registry import MODELS

    print(f"batch {args.batch_size}, {args.rounds} alternating rounds, best counts; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| net | input | precision | Keras BN ms/step | fused BN ms/step | speed-up |\n|---|---|---|---:|---:|---:|")
    for name in args.models:
        size = tuple(args.two_view_size if MODELS[name].inputs == "two_view" else args.size)
        spec = MODELS[name]
        builds = {"keras": lambda: spec.builder(**dict(spec.builder_options), image_size=size),
                  "fused": lambda: build_model(name, image_size=size)}
        for precision in args.precisions:
            steppers = {kind: execution.FitStepper((precision, False), build, args.batch_size)
                        for kind, build in builds.items()}
            best = {kind: min(times) for kind, times in execution.alternate(steppers, args.rounds).items()}
            print(f"| {name} | {size[0]}x{size[1]} | {precision} | {best['keras'] * 1000:.0f} | "
                  f"{best['fused'] * 1000:.0f} | {best['keras'] / best['fused']:.2f}x |", flush=True)
            keras.backend.clear_session()
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
