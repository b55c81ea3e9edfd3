"""The PyTorch side of bench/bench_monai.py: each registered tfbonemet net's counterpart, and a timing worker.

Runs under a separate interpreter that has torch, torchvision and MONAI (never tfbonemet's venv:
TensorFlow and torch 2.x in one process segfault, and the package must not depend on torch):

    python3 -m venv /work/torchenv && /work/torchenv/bin/pip install torch torchvision monai numpy

torchvision must be the build made for that torch (a CUDA torchvision does not load beside a CPU-only
torch); two_view_net, dscint, densenet121 and xception need no torchvision.

Counterparts: MONAI DenseNet121; torchvision VGG16 (conv base), ResNet50, InceptionV3 and
EfficientNetV2-S with tfbonemet's heads; plain-torch replicas of two_view_net, Dscint and Xception
(torchvision has no Xception), layer for layer as keras.applications / tfbonemet build them.
Single-channel inputs are repeated to three channels as tfbonemet's `repeat` adapter does.
Precision: float32, or bfloat16 as torch users train with it: `torch.autocast("cpu", dtype=torch.bfloat16)`
around forward and loss, float32 weights, backward and optimizer step outside it.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


def conv_bn_relu(cin, cout, k=3, stride=1, bias=False, bn=True, momentum=0.1):
    layers = [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias)]
    return layers + ([nn.BatchNorm2d(cout, momentum=momentum)] if bn else []) + [nn.ReLU()]


class TwoView(nn.Module):
    """tfbonemet.models.two_view.build_two_view_net's defaults: shared backbone, avg+max pooling, concat.

    Backbone as build_scint_backbone: the stem (full resolution for crops up to 128x128 pixels, else a
    strided 5x5 conv + pool), stages of two 3x3 convs + max-pool, two convs in the last stage.
    """

    def __init__(self, size, filters=(16, 32, 64, 128), hidden=64, dropout=0.2, classes=2):
        super().__init__()
        if size[0] * size[1] <= 128 * 128:
            layers = conv_bn_relu(1, filters[0]) + conv_bn_relu(filters[0], filters[0]) + [nn.MaxPool2d(2)]
        else:
            layers = conv_bn_relu(1, filters[0], 5, 2) + [nn.MaxPool2d(2)]
        for cin, cout in zip(filters[:-2], filters[1:-1]):
            layers += conv_bn_relu(cin, cout) + conv_bn_relu(cout, cout) + [nn.MaxPool2d(2)]
        layers += conv_bn_relu(filters[-2], filters[-1]) + conv_bn_relu(filters[-1], filters[-1])
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * filters[-1], hidden), nn.ReLU(),
                                  nn.Linear(hidden, classes))

    def forward(self, anterior, posterior):
        pooled = []
        for view in (anterior, posterior):
            maps = self.backbone(view)
            pooled += [maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))]
        return self.head(torch.cat(pooled, dim=1))


class HybridAttention(nn.Module):
    """CBAM channel then spatial attention, as tfbonemet.models.layers.HybridAttention."""

    def __init__(self, channels, reduction=8, kernel=7):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, max(channels // reduction, 1)), nn.ReLU(),
                                 nn.Linear(max(channels // reduction, 1), channels))
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        weights = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))
        x = x * weights[:, :, None, None]
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(stats))


def dscint(filters=(32, 64, 128, 128, 256, 256), hidden=256, dropout=0.5, classes=4):
    """tfbonemet.models.dscint.build_dscint: conv(+ReLU) [BN] [pool] blocks, attention after block 2."""
    def block(cin, cout, k, stride=1, norm=False, pool=False):
        layers = [nn.Conv2d(cin, cout, k, stride, padding=k // 2), nn.ReLU()]
        return layers + ([nn.BatchNorm2d(cout)] if norm else []) + ([nn.MaxPool2d(2)] if pool else [])
    f = filters
    return nn.Sequential(
        *block(1, f[0], 7, 2, True, True), *block(f[0], f[1], 5, 1, True, True), HybridAttention(f[1]),
        *block(f[1], f[2], 3), *block(f[2], f[3], 3, pool=True), *block(f[3], f[4], 3), *block(f[4], f[5], 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(f[5], hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, classes))


class SeparableConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


class XceptionBlock(nn.Module):
    """keras.applications.Xception's residual block: [ReLU] sepconv BN ... (+ strided 1x1 shortcut)."""

    def __init__(self, cin, widths, stride, first_relu=True):
        super().__init__()
        layers, c = [], cin
        for i, w in enumerate(widths):
            layers += ([nn.ReLU()] if first_relu or i else []) + [SeparableConv(c, w), nn.BatchNorm2d(w)]
            c = w
        if stride == 2:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
        self.body = nn.Sequential(*layers)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                         if stride == 2 else nn.Identity())

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


def xception(classes=2, dropout=0.2):
    """keras.applications.Xception (include_top=False) + tfbonemet's avg-pool, dropout, dense head."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        XceptionBlock(64, (128, 128), 2, first_relu=False), XceptionBlock(128, (256, 256), 2),
        XceptionBlock(256, (728, 728), 2), *[XceptionBlock(728, (728, 728, 728), 1) for _ in range(8)],
        XceptionBlock(728, (728, 1024), 2),
        SeparableConv(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(), SeparableConv(1536, 2048), nn.BatchNorm2d(2048),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(2048, classes))


class RepeatChannels(nn.Module):
    """tfbonemet's `repeat` adapter: one grey channel -> the three an ImageNet backbone takes."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def counterpart(name: str, size) -> tuple[nn.Module, str]:
    """(torch module taking tfbonemet's inputs, its label) for a registered tfbonemet model name."""
    if name == "two_view_net":
        return TwoView(size), "plain torch replica"
    if name == "dscint":
        return dscint(), "plain torch replica"
    if name == "xception":
        return RepeatChannels(xception()), "plain torch replica"
    if name == "densenet121":
        from monai.networks.nets import DenseNet121
        return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), "monai.networks.nets.DenseNet121"
    import torchvision.models as tv  # only the nets below need it

    gap_head = lambda c, classes=2, p=0.2: [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p),  # noqa: E731
                                           nn.Linear(c, classes)]
    if name == "vgg16":
        return RepeatChannels(nn.Sequential(tv.vgg16().features, *gap_head(512))), "torchvision vgg16 features"
    if name == "yim_vgg16":
        flat = 512 * (size[0] // 32) * (size[1] // 32)
        head = [nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 2)]
        return RepeatChannels(nn.Sequential(tv.vgg16().features, *head)), "torchvision vgg16 features"
    if name == "resnet50":
        return RepeatChannels(tv.resnet50(num_classes=2)), "torchvision resnet50"
    if name == "inception_v3":
        return RepeatChannels(tv.inception_v3(num_classes=2, aux_logits=False, init_weights=False)), \
            "torchvision inception_v3"
    if name == "efficientnetv2_s":
        return RepeatChannels(tv.efficientnet_v2_s(num_classes=2)), "torchvision efficientnet_v2_s"
    raise SystemExit(f"no torch counterpart for {name!r}")


WARMUP_STEPS = 3  # after the first step, as tfbonemet.execution.FitStepper warms up Keras' side


class Stepper:
    """Adam 1e-4 training steps on one random batch (channels-first unless asked), float32 or bfloat16 autocast."""

    def __init__(self, name, size, batch_size, precision="float32", channels_last=False):
        self.model, self.label = counterpart(name, size)
        views = 2 if name == "two_view_net" else 1
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        self.inputs = [torch.rand(batch_size, 1, *size).contiguous(memory_format=fmt) for _ in range(views)]
        self.bf16 = precision == "bfloat16"
        with torch.no_grad():
            classes = self.model(*self.inputs).shape[-1]
        self.labels = torch.randint(0, classes, (batch_size,))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.loss = nn.CrossEntropyLoss()
        self.model.train()

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(self.model(*self.inputs), self.labels)
        loss.backward()
        self.optimizer.step()

    def seconds_per_step(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps


def main() -> None:
    """Line protocol on stdin/stdout: one JSON line when warmed up, then `N` -> seconds per step over N steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", required=True)
    parser.add_argument("--size", type=int, nargs=2, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stepper = Stepper(args.net, tuple(args.size), args.batch_size, args.precision, args.channels_last)
    stepper.seconds_per_step(1)
    stepper.seconds_per_step(WARMUP_STEPS)
    import monai
    from bench_monai import serve  # imports neither framework
    omp = os.environ.get("OMP_WAIT_POLICY", "default")
    serve({"label": stepper.label, "precision": args.precision, "threads": torch.get_num_threads(),
           "warm_s": stepper.seconds_per_step(1),
           "version": f"torch {torch.__version__} ({torch.get_num_threads()} threads, OpenMP wait policy {omp}), "
                      f"monai {monai.__version__}"},
          stepper.seconds_per_step)


if __name__ == "__main__":
    main()
