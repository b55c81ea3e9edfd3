"""tfbonemet against MONAI / plain PyTorch on the same CPU in one run: training steps per second with the
same input size, batch and optimizer (Adam 1e-4), random in-memory inputs, float32, no XLA.

    /work/venv/bin/pip install torch==2.13.0 monai   # the local CPU wheel; never a package dependency
    python bench/bench_monai.py --steps 5 --repeats 3

DenseNet121: tfbonemet's registered `densenet121` (1 -> 3 channel repeat + keras.applications
DenseNet121) against `monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=1)`.
Two-view: tfbonemet's `two_view_net` against the same network written plainly in PyTorch.
Printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def torch_two_view(filters=(16, 32, 64, 128), hidden=64, classes=2):
    """tfbonemet.models.two_view.build_two_view_net's defaults, layer for layer, in PyTorch."""
    import torch
    from torch import nn

    def conv_bn_relu(cin, cout, k=3, stride=1):
        return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout, momentum=0.1),
                nn.ReLU()]

    class TwoView(nn.Module):
        def __init__(self):
            super().__init__()
            layers = conv_bn_relu(1, filters[0], 5, 2)
            for cin, cout in zip(filters[:-2], filters[1:-1]):
                layers += conv_bn_relu(cin, cout) + [nn.MaxPool2d(2)]
            layers += conv_bn_relu(filters[-2], filters[-1])
            self.backbone = nn.Sequential(*layers)  # shared by both views
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * filters[-1], hidden), nn.ReLU(),
                                      nn.Linear(hidden, classes))

        def forward(self, anterior, posterior):
            pooled = []
            for view in (anterior, posterior):
                maps = self.backbone(view)
                pooled += [maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))]
            return self.head(torch.cat(pooled, dim=1))

    return TwoView()


def torch_seconds_per_step(model, inputs, labels, steps):
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(*inputs), labels).backward()
        optimizer.step()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the best of each side counts")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="tfbonemet's dtype policy (PyTorch stays float32)")
    parser.add_argument("--densenet-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--two-view-size", type=int, nargs=2, default=(512, 128), metavar=("H", "W"))
    args = parser.parse_args()

    import monai
    import torch

    from tfbonemet.execution import time_train_steps
    from tfbonemet.models import build_model

    b = args.batch_size
    print(f"batch {b}, {args.steps} timed steps x {args.repeats} rounds, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), monai {monai.__version__}, "
          f"tfbonemet precision {args.precision}, load average {os.getloadavg()[0]:.1f}")
    labels = torch.randint(0, 2, (b,))
    cases = [
        ("DenseNet121", args.densenet_size,
         lambda: build_model("densenet121", image_size=tuple(args.densenet_size)),
         lambda: monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
         lambda: (torch.rand(b, 1, *args.densenet_size),), "MONAI"),
        ("two-view net", args.two_view_size,
         lambda: build_model("two_view_net", image_size=tuple(args.two_view_size)),
         torch_two_view, lambda: (torch.rand(b, 1, *args.two_view_size), torch.rand(b, 1, *args.two_view_size)),
         "PyTorch"),
    ]
    for name, size, keras_build, torch_build, torch_inputs, other in cases:
        ours, theirs = float("inf"), float("inf")
        torch_model, inputs = torch_build(), torch_inputs()
        for _ in range(args.repeats):
            ours = min(ours, time_train_steps(args.precision, False, keras_build, b, steps=args.steps))
            theirs = min(theirs, torch_seconds_per_step(torch_model, inputs, labels, args.steps))
        print(f"{name:13s} {size[0]}x{size[1]}: tfbonemet {b / ours:6.1f} img/s, {other} {b / theirs:6.1f} img/s, "
              f"ratio tfbonemet/{other} {theirs / ours:.2f}", flush=True)


if __name__ == "__main__":
    main()
