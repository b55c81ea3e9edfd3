"""Every registered model, keras-hub style: shapes, dtypes, .keras round trip, precision, training,
plus pre-trained backbone weights and the freeze / unfreeze plan.

The keras.applications backbones are built at their smallest inputs; checks that take more than a
few seconds on two CPU cores for the big backbones are marked slow.
"""
import functools
import importlib.util
import math
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.errors import ConfigError, ModelError
from tfbonemet.models import MODELS, build_model, finetune
from tfbonemet.models.finetune import freeze_backbone, load_backbone_weights, unfreeze
from tfbonemet.models.two_view import backbones, build_scint_backbone

SIZES = {"two_view_net": (64, 32), "dscint": (64, 32), "xception": (71, 71), "inception_v3": (75, 75)}
OPTIONS = {"two_view_net": {"filters": (8, 16, 16)}}
HEAVY = {"resnet50", "densenet121", "xception", "inception_v3", "efficientnetv2_s"}
TRANSFER = sorted(name for name in MODELS if name not in ("two_view_net", "dscint"))


def size_of(name):
    return SIZES.get(name, (32, 32))


def heavy_slow(names):
    """Parametrise over models, marking the big backbones slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def tiny(name, **options):
    return build_model(name, image_size=size_of(name), **{**OPTIONS.get(name, {}), **options})


@functools.cache
def cached(name):
    return tiny(name)


def random_inputs(name, batch=2, seed=0):
    """A dict by view for two-view models, one array for single-input models (the structure Keras expects)."""
    rng = np.random.default_rng(seed)
    views = {view: rng.random((batch, *size_of(name), 1), dtype=np.float32) for view in MODELS[name].input_names}
    return views if len(views) > 1 else views["image"]


@functools.cache
def phantom_batch(size, n=8):
    """Normalised phantom views (n studies, half metastatic) resized to `size`, and binary labels."""
    phantom = BoneScanPhantom(shape=(128, 32), seed=3, class_probs=(0.5, 0.5, 0.0, 0.0))
    studies = [phantom.study(i, label=i % 2) for i in range(n)]

    preprocessor = ScanPreprocessor("two_view", size)
    prepared = [preprocessor.numpy({"anterior": s.anterior, "posterior": s.posterior}) for s in studies]
    labels = np.array([s.is_metastatic for s in studies], dtype=np.int32)
    return {v: np.stack([p[v] for p in prepared]) for v in ("anterior", "posterior")}, labels


def model_inputs(name, views):
    return views if MODELS[name].inputs == "two_view" else views["anterior"]


def all_layers(model):
    """Layers of the model and of any nested model in it."""
    return [inner for layer in model.layers
            for inner in (all_layers(layer) if isinstance(layer, keras.Model) else [layer])]


class policy:
    """Set a global dtype policy for building, restoring the previous one."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


# ------------------------------------------------------------------ every registered model
def test_registry_has_every_family():
    assert set(MODELS) == {"two_view_net", "dscint", "vgg16", "resnet50", "densenet121", "xception", "inception_v3",
                           "efficientnetv2_s", "yim_vgg16"}
    for spec in MODELS.values():
        assert len(spec.gradcam_layers) == len(spec.input_names) and spec.paper
    assert MODELS["two_view_net"].gradcam_layers == ("anterior_features", "posterior_features")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_dtype_and_gradcam_layers(name):
    spec, model = MODELS[name], cached(name)
    assert [t.name.split(":")[0] for t in model.inputs] == list(spec.input_names)
    out = model(random_inputs(name), training=False)
    assert out.shape == (2, spec.default_num_classes) and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    head = model.get_layer("probabilities")
    assert head.activation is keras.activations.softmax and model.layers[-1] is head
    for target in spec.gradcam_layers:
        # reachable from the model's own inputs (flat, not inside a nested model), and spatial
        maps = keras.Model(model.input, model.get_layer(target).output)(random_inputs(name))
        assert len(maps.shape) == 4 and maps.shape[1] > 0


@pytest.mark.parametrize("name", heavy_slow(sorted(MODELS)))
def test_keras_round_trip_gives_identical_outputs(name, tmp_path):
    model, x = cached(name), random_inputs(name, seed=1)
    model.save(tmp_path / f"{name}.keras")
    loaded = keras.models.load_model(tmp_path / f"{name}.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


PRECISION_CASES = [pytest.param(name, "mixed_float16", marks=[pytest.mark.slow] if name in HEAVY else [])
                   for name in sorted(MODELS)] + [(name, "mixed_bfloat16") for name in ("two_view_net", "dscint", "vgg16")]


@pytest.mark.parametrize("name,precision", PRECISION_CASES)
def test_mixed_precision_outputs_float32(name, precision):
    with policy(precision):
        model = tiny(name)
    convs = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.Conv2D)]
    assert convs and convs[-1].compute_dtype == precision.split("_")[1] and convs[-1].variable_dtype == "float32"
    out = model(random_inputs(name), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-2)


def train_losses(model, x, y, learning_rate, steps=5):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", run_eagerly=True)
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def settles_below_start(losses) -> bool:
    """The loss gets below its starting value within the last five steps. Randomly initialised
    ImageNet backbones give large, ill-scaled features, so single steps overshoot (measured:
    resnet50's head 1.45 -> 3.09 -> 2.59 -> 0.83 -> 1.78); a model that does not learn stays put."""
    return min(losses[-5:]) < losses[0]


@pytest.mark.parametrize("name,learning_rate", [("two_view_net", 3e-3), ("dscint", 3e-4)])
def test_training_lowers_loss(name, learning_rate):
    views, y = phantom_batch(size_of(name))
    keras.utils.set_random_seed(0)
    losses = train_losses(tiny(name, num_classes=2, dropout=0.0), model_inputs(name, views), y, learning_rate)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", heavy_slow(TRANSFER))
def test_transfer_head_training_lowers_loss(name):
    """Stage 1 of fine-tuning: frozen backbone, the new head learns."""
    views, y = phantom_batch(size_of(name))
    keras.utils.set_random_seed(0)
    model = freeze_backbone(tiny(name, num_classes=2, dropout=0.0))
    losses = train_losses(model, model_inputs(name, views), y, 1e-3, steps=8)
    assert settles_below_start(losses), losses


@pytest.mark.slow
@pytest.mark.parametrize("name", TRANSFER)
def test_transfer_full_training_lowers_loss(name):
    views, y = phantom_batch(size_of(name))
    keras.utils.set_random_seed(0)
    losses = train_losses(tiny(name, num_classes=2, dropout=0.0), model_inputs(name, views), y, 1e-4, steps=8)
    assert settles_below_start(losses), losses


def test_dscint_has_the_papers_parts():
    """Eight weight layers (six convolutions + two fully connected), one hybrid attention, two normalisations."""
    model = cached("dscint")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 6 and kinds.count("Dense") == 2
    assert kinds.count("HybridAttention") == 1
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 2
    assert kinds.index("HybridAttention") < kinds.index("Dense")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="needs PyTorch, which neither the test extras nor CI install: pip install -e '.[torch]'")
def test_models_run_on_the_torch_backend(tmp_path):
    """Model code is keras.ops only: builds, runs and round-trips with KERAS_BACKEND=torch, without TensorFlow.

    Runs only where torch is installed (`pip install -e '.[torch]'`, then `pytest -m slow -k torch_backend`):
    CI installs no torch and deselects slow tests, so a passing CI says nothing about this backend.
    """
    script = f"""
import sys, keras, numpy as np
from tfbonemet.models import build_model
assert keras.backend.backend() == "torch" and "tensorflow" not in sys.modules
for name in ("two_view_net", "dscint", "vgg16"):
    model = build_model(name, image_size=(64, 32))
    x = {{t.name: np.random.rand(2, 64, 32, 1).astype("float32") for t in model.inputs}}
    x = x if len(x) > 1 else x.popitem()[1]
    model.save(r"{tmp_path}/m.keras")
    again = keras.models.load_model(r"{tmp_path}/m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
"""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------ transfer specifics
@pytest.mark.parametrize("channels,adapter,layer", [(1, "auto", "channel_repeat"), (4, "auto", "channel_adapter"),
                                                    (3, "conv", "channel_adapter")])
def test_channel_adapters(channels, adapter, layer):
    """N phases stacked as channels reach the 3-channel backbone; the conv adapter starts as their mean."""
    model = build_model("vgg16", image_size=(32, 32), channels=channels, channel_adapter=adapter)
    assert model.input_shape == (None, 32, 32, channels)
    assert model.get_layer(layer).output.shape[-1] == 3
    if layer == "channel_adapter":
        x = np.random.default_rng(0).random((1, 32, 32, channels), dtype=np.float32)
        mixed = keras.Model(model.input, model.get_layer(layer).output)(x)
        np.testing.assert_allclose(np.asarray(mixed), np.repeat(x.mean(-1, keepdims=True), 3, -1), rtol=1e-5)


def test_no_adapter_for_three_channels_and_bad_options_fail():
    names = {layer.name for layer in build_model("vgg16", image_size=(32, 32), channels=3).layers}
    assert not names & {"channel_repeat", "channel_adapter"}
    with pytest.raises(ConfigError, match="at least 75x75"):
        build_model("inception_v3", image_size=(64, 64))
    with pytest.raises(ConfigError, match="repeat adapter needs 1"):
        build_model("vgg16", image_size=(32, 32), channels=2, channel_adapter="repeat")


def test_yim_vgg16_is_vgg16_base_with_new_head():
    yim, plain = cached("yim_vgg16"), cached("vgg16")
    base = [layer.name for layer in finetune.backbone_layers(yim)]
    assert base == [layer.name for layer in finetune.backbone_layers(plain)] and "block5_conv3" in base
    assert {"head_flatten", "fc1", "head_dropout"} <= {layer.name for layer in yim.layers}


# ------------------------------------------------------------------ pre-trained backbone weights
def bare_vgg16():
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))


def legacy_h5(model, path):
    """The layout of keras.applications ImageNet files (`*_notop.h5`)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def assert_same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["h5", "weights.h5"])
def test_imagenet_backbone_file_loads_into_flat_model(kind, tmp_path):
    """A bare backbone's weights, saved at another input size, load through build_model(backbone_weights=...)."""
    source = bare_vgg16()
    path = tmp_path / f"vgg16_notop.{kind}"
    legacy_h5(source, path) if kind == "h5" else source.save_weights(path)
    model = build_model("vgg16", image_size=(64, 32), backbone_weights=str(path), freeze_backbone=True)
    for name in ("block1_conv1", "block5_conv3"):
        assert_same_weights(model.get_layer(name), source.get_layer(name))
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"probabilities"}


def test_backbone_from_pretraining_run_loads(tmp_path):
    """A `.keras` classifier of the same family (pre-trained on chest X-rays, 3 classes, other size)."""
    pretrained = build_model("vgg16", image_size=(48, 48), num_classes=3)
    pretrained.save(tmp_path / "backbone.keras")
    model = load_backbone_weights(tiny("vgg16"), tmp_path / "backbone.keras")
    for a, b in zip(finetune.backbone_layers(pretrained), finetune.backbone_layers(model), strict=True):
        assert_same_weights(a, b)


@pytest.mark.parametrize("shared", [True, False])
def test_two_view_backbone_loads_into_both_branches(shared, tmp_path):
    """The scan backbone pre-trained alone (on 64x64 chest X-rays) initialises each view's branch."""
    source = build_scint_backbone((64, 64, 1), filters=(8, 16, 16))
    source.save_weights(tmp_path / "xray.weights.h5")
    model = tiny("two_view_net", shared_backbone=shared)
    load_backbone_weights(model, tmp_path / "xray.weights.h5")
    assert len(backbones(model)) == (1 if shared else 2)
    for branch in backbones(model):
        assert_same_weights(branch, source)


def test_two_view_backbone_from_pretraining_model(tmp_path):
    """The pretrain command's layout: the backbone nested under a fresh head on one `image` input."""
    backbone = build_scint_backbone((64, 64, 1), filters=(8, 16, 16))
    image = keras.Input((64, 64, 1), name="image")
    head = keras.layers.Dense(2, activation="softmax", name="probabilities")
    pretraining = keras.Model(image, head(keras.layers.GlobalAveragePooling2D()(backbone(image))))
    pretraining.save(tmp_path / "backbone.keras")
    model = load_backbone_weights(tiny("two_view_net", shared_backbone=False), tmp_path / "backbone.keras")
    for branch in backbones(model):
        assert_same_weights(branch, backbone)


def mismatch_cases(tmp_path):
    scan_backbone = build_scint_backbone((64, 32, 1), filters=(8, 16, 32))
    scan_backbone.save_weights(tmp_path / "scan.weights.h5")
    scan_backbone.save(tmp_path / "scan.keras")
    legacy_h5(bare_vgg16(), tmp_path / "vgg16_notop.h5")
    (tmp_path / "backbone.npz").write_bytes(b"")
    (tmp_path / "truncated.keras").write_bytes(b"PK\x03\x04 not a whole archive")
    return [
        ("vgg16", "scan.weights.h5", "cannot load as weights for this backbone"),
        ("two_view_net", "vgg16_notop.h5", "Layer count mismatch"),
        ("two_view_net", "scan.keras",
         r"layer 'last_stage_conv1' has weights of shapes \[\(3, 3, 16, 32\)\], but 'last_stage_conv1' in the model "
         r"needs \[\(3, 3, 16, 16\)\]"),
        ("two_view_net", "missing.weights.h5", "does not exist"),
        ("two_view_net", "backbone.npz", "must end in"),
        ("two_view_net", "truncated.keras", "cannot load"),
        ("dscint", "scan.keras", "has no pre-trainable backbone"),
    ]


def test_mismatched_backbone_files_fail_clearly_and_change_nothing(tmp_path):
    for name, file, message in mismatch_cases(tmp_path):
        model = tiny(name)
        before = [w.copy() for w in model.get_weights()]
        with pytest.raises(ModelError, match=message) as caught:
            load_backbone_weights(model, tmp_path / file)
        assert file in str(caught.value) or "no pre-trainable" in str(caught.value)
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ fine-tuning plan
def test_unfreeze_from_layer_or_fraction():
    model = freeze_backbone(tiny("vgg16"))
    stack = finetune.backbone_layers(model)
    assert not any(layer.trainable for layer in stack) and model.get_layer("probabilities").trainable
    unfreeze(model, from_layer="block5_conv1")
    assert [layer.name for layer in stack if layer.trainable] == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool", "backbone_features"]
    unfreeze(model, fraction=0.3)
    assert sum(layer.trainable for layer in stack) == math.ceil(0.3 * len(stack))
    assert stack[-1].trainable and not stack[0].trainable
    for kwargs, message in [({"from_layer": "probabilities"}, "not in the backbone"), ({}, "exactly one"),
                            ({"fraction": 1.5}, "fraction")]:
        with pytest.raises(ModelError, match=message):
            unfreeze(model, **kwargs)


def test_frozen_batchnorm_stays_in_inference_mode():
    """Frozen and later unfrozen: BN statistics never move; convolutions train only once unfrozen."""
    views, y = phantom_batch(size_of("two_view_net"))
    model = freeze_backbone(tiny("two_view_net", num_classes=2, dropout=0.0, shared_backbone=False))
    bns = [layer for layer in finetune.backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    conv = model.get_layer("anterior_backbone").get_layer("last_conv")
    snapshot = lambda: ([bn.moving_mean.numpy().copy() for bn in bns], conv.get_weights()[0].copy())  # noqa: E731
    head_before = model.get_layer("probabilities").get_weights()[0].copy()
    stats_before, kernel_before = snapshot()
    train_losses(model, views, y, 1e-2, steps=2)
    stats_after, kernel_after = snapshot()
    np.testing.assert_array_equal(kernel_before, kernel_after)
    assert not np.array_equal(head_before, model.get_layer("probabilities").get_weights()[0])
    np.testing.assert_allclose(np.asarray(model(views, training=True)), np.asarray(model(views, training=False)),
                               rtol=1e-5, atol=1e-6)
    unfreeze(model, fraction=1.0)
    assert not any(bn.trainable for bn in bns)
    train_losses(model, views, y, 1e-2, steps=2)
    stats_final, kernel_final = snapshot()
    assert not np.array_equal(kernel_before, kernel_final)
    for a, b, c in zip(stats_before, stats_after, stats_final):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_frozen_backbone_survives_round_trip(tmp_path):
    model = freeze_backbone(tiny("two_view_net"))
    model.save(tmp_path / "frozen.keras")
    loaded = keras.models.load_model(tmp_path / "frozen.keras")
    assert not any(layer.trainable for layer in finetune.backbone_layers(loaded))
    assert len(loaded.trainable_weights) == len(model.trainable_weights) > 0


# ------------------------------------------------------------------ CLI
def test_models_command_lists_registry():
    from tfbonemet.cli import cli

    result = CliRunner().invoke(cli, ["models", "two_view_net", "dscint"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("two_view_net", "dscint"):
        assert f"{build_model(name).count_params():,} params" in result.output
        assert MODELS[name].paper in result.output
    assert "input 512x128" in result.output and "anterior, posterior" in result.output
    listing = CliRunner().invoke(cli, ["models", "--no-params"], catch_exceptions=False).output
    assert all(name in listing for name in MODELS) and "Yim et al. 2022" in listing
