"""Where one training step of a registered net spends its CPU time, by op category, in tfbonemet (Keras on
TensorFlow, TensorFlow profiler) and in its MONAI / torch counterpart (torch.profiler, the counterparts of
bench/torch_nets.py), float32 and bfloat16.

    python bench/profile_step.py --model densenet121 --side tf --precision float32
    /path/to/torch/python bench/profile_step.py --model resnet50 --side torch --precision bfloat16

The step is the one the measured comparison times (bench/bench_monai.py): batch 16, Adam, random
inputs, Keras' compiled `fit` step without XLA (mixed_bfloat16 for bfloat16) against a torch step
(autocast bfloat16 for bfloat16). Self time of every op is summed per op type and per category;
with other processes running the absolute times mean little, the proportions are what to read.
Printed, never asserted.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# (category, pattern on the op type), first match wins; tested against TensorFlow and torch op names
# (TensorFlow's depthwise convolutions are DepthwiseConv2dNative*, torch's all go through convolution*).
CATEGORIES = [
    ("conv backprop filter", r"Conv2DBackpropFilter|Conv2dNativeBackpropFilter|convolution_backward_weight"),
    ("conv backprop input (torch: input + filter)", r"Conv2DBackpropInput|Conv2dNativeBackpropInput|"
                                                    r"convolution_backward$"),
    ("conv forward", r"Conv2D|Conv2d|conv2d|convolution"),
    ("batch norm backward", r"FusedBatchNormGrad|batch_norm_backward"),
    ("batch norm forward (TF: ReLU fused in)", r"FusedBatchNorm|batch_norm"),
    ("ReLU (torch forward + backward, TF backward)", r"Relu|relu|threshold_backward|clamp_min"),
    ("pooling", r"Pool|pool"),
    ("concat / slice / copy / pad", r"Concat|::cat$|Slice|slice|narrow|Split|copy_|clone|contiguous|Pad$|pad"),
    ("layout reorder / transpose", r"Transpose|Reorder|transpose|to_dense"),
    ("dtype cast", r"^Cast$|^aten::to$|_to_copy"),
    ("gradient sum", r"AddN|AddV2|^aten::add$"),
    ("optimizer update (Adam)", r"ResourceApply|Assign|_foreach|Adam|lerp|addcdiv|addcmul|[Ss]qrt|^Mul$|^Sub$|"
                                r"^RealDiv$|^Square$|^Pow$|mul_|div|add_$"),
    ("other (loss, head, variable reads, ...)", r".*"),
]


def category(op_type: str) -> str:
    for name, pattern in CATEGORIES:
        if re.search(pattern, op_type):
            return name
    return "other"


def table(per_type: dict, steps: int, title: str, top: int = 25) -> str:
    total = sum(per_type.values())
    per_cat = collections.Counter()
    for op, t in per_type.items():
        per_cat[category(op)] += t
    lines = [f"### {title}", "", f"self time {total / steps / 1e3:.1f} ms/step summed over ops (all threads)", "",
             "| category | ms/step | share |", "|---|---:|---:|"]
    lines += [f"| {c} | {t / steps / 1e3:.1f} | {100 * t / total:.1f} % |" for c, t in per_cat.most_common()]
    lines += ["", "| op type | category | ms/step | share |", "|---|---|---:|---:|"]
    lines += [f"| {op} | {category(op)} | {t / steps / 1e3:.1f} | {100 * t / total:.1f} % |"
              for op, t in collections.Counter(per_type).most_common(top)]
    return "\n".join(lines)


def tf_profile(args) -> dict:
    """Op type -> self time in microseconds over `args.steps` compiled fit steps."""
    import keras
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from tfbonemet import execution
    from tfbonemet.models import build_model

    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[args.precision]
    with execution.dtype_policy(policy):
        model = build_model(args.model, image_size=tuple(args.size))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=False)
    data = tf.data.Dataset.from_tensors(execution.random_batch(model, args.batch_size)).repeat()
    model.fit(data, steps_per_epoch=args.warmup, epochs=1, verbose=0)
    logdir = tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(logdir)
    model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    per_type = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            # Op kernels are the events carrying a tf_op stat ("name:Type"); they do not nest on one thread.
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                op = None
                for stat in list(meta.stats) + list(event.stats):
                    if stat_names.get(stat.metadata_id) == "tf_op":
                        op = stat.str_value or plane.stat_metadata[stat.ref_value].name
                if op is None and re.fullmatch(r"[^:\s]+:[A-Za-z_]\w*", meta.name):
                    op = meta.name  # "node name:OpType"; executor and function events are left out
                if op and ":" in op:
                    per_type[op.rsplit(":", 1)[1]] += event.duration_ps / 1e6
    return per_type


def torch_profile(args) -> dict:
    import sys

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_nets import Stepper

    stepper = Stepper(args.model, tuple(args.size), args.batch_size, args.precision)
    for _ in range(args.warmup):
        stepper.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            stepper.step()
    per_type = collections.Counter()
    for e in prof.key_averages():
        per_type[e.key] += e.self_cpu_time_total
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return per_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet121", help="a registered net with a counterpart in torch_nets")
    parser.add_argument("--side", choices=("tf", "torch"), default="tf")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    per_type = tf_profile(args) if args.side == "tf" else torch_profile(args)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print(table(per_type, args.steps, f"{args.side} {args.model} {args.precision}, batch {args.batch_size}, "
                                      f"{args.size[0]}x{args.size[1]}", args.top))


if __name__ == "__main__":
    main()
