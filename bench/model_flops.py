"""Parameters and forward FLOPs of every registered model at its default input size.

FLOPs come from the TensorFlow profiler (`float_operation`) on the frozen graph of a batch-1
inference concrete function: a multiply and an add count as two FLOPs (so GMACs = GFLOPs / 2),
and element-wise ops (bias, batch-norm scale/shift, attention products) are counted too. A
two-view model's sample is one study: both views, anterior and posterior.

    python bench/model_flops.py                       # all registered models, markdown table
    python bench/model_flops.py --models dscint vgg16 --image-size 1024 256
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

from tfbonemet.models import MODELS, build_model  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the v1 profiler warns about its own deprecation


def forward_flops(model: keras.Model) -> int:
    """Profiler FLOPs of one batch-1 forward pass in inference mode."""
    specs = {t.name.split(":")[0]: tf.TensorSpec((1, *t.shape[1:]), tf.float32) for t in model.inputs}
    signature = specs if len(specs) > 1 else next(iter(specs.values()))
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


def measure(name: str, image_size=None) -> dict:
    spec = MODELS[name]
    size = tuple(image_size or spec.default_image_size)
    model = build_model(name, image_size=size)
    row = {"name": name, "inputs": " + ".join(spec.input_names), "size": f"{size[0]}x{size[1]}",
           "params": model.count_params(), "flops": forward_flops(model)}
    keras.backend.clear_session()
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="override every model's default input size")
    args = parser.parse_args(argv)
    print("| model | inputs | input size | parameters | forward GFLOPs / sample |")
    print("|---|---|---|---:|---:|")
    for name in args.models:
        row = measure(name, args.image_size)
        print(f"| {row['name']} | {row['inputs']} | {row['size']} | {row['params']:,} | {row['flops'] / 1e9:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
