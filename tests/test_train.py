"""Training runs: options reach the run, presets resolve, pre-training feeds fine-tuning, CV, precision choice."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tfbonemet import config as config_lib
from tfbonemet import execution
from tfbonemet.errors import ConfigError
from tfbonemet.models import MODELS
from tfbonemet.run import read_config, validate
from tfbonemet.tasks.train import recipe
from tfbonemet.tasks.train import trainer as train

TINY = dict(num_studies=40, image_height=128, image_width=32, epochs=2, batch_size=8,
            model_options={"filters": [8, 16, 16]})
quiet = lambda *_: None  # noqa: E731


def tiny(tmp_path, **values):
    return config_lib.resolve(overrides={**TINY, "output_dir": str(tmp_path), "run_name": "run", **values})


def test_fit_with_augmentation_balanced_sampling_focal_loss_and_cosine_schedule(tmp_path):
    config = tiny(tmp_path, epochs=3, augmentation={"rotation": 5.0, "flip_left_right": True, "noise_counts": 200.0},
                  sampling="balanced", loss="focal", lr_schedule="cosine", early_stopping=2)
    assert config.precision == "auto" and config.jit == "auto"  # the defaults
    lines = []
    run_dir = train.fit(config, log=lines.append)
    assert {"model.keras", "config.json", "history.csv", "metrics.json", "logs"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "backup").exists()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["precision"] == "float32" and saved["jit"] == "off"  # auto resolved and recorded
    if not execution.has_gpu():  # a 3-epoch run of 28 studies is too short to repay the timing probe
        assert any(line.startswith("Execution: float32+noxla, not probed") for line in lines), lines
    assert read_config(run_dir).sampling == "balanced"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and 0 <= metrics["auc"] <= 1
    point = metrics["operating_point"]
    assert point["rule"] == "max_f1" and point["chosen_on"] == "validation" and 0 < point["threshold"] < 1
    assert json.loads((run_dir / "preprocessor.json").read_text())["image_size"] == [128, 32]
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 2)


@pytest.mark.parametrize("name", config_lib.preset_names())
def test_presets_resolve_to_valid_configs_and_options_override_them(name):
    values = config_lib.load_preset(name)
    assert values["model"] in MODELS
    config = config_lib.resolve(name, {"epochs": 1, "augmentation": {"rotation": 1.0}})
    validate(config)
    assert config.epochs == 1 and config.augmentation["rotation"] == 1.0
    assert config_lib.preset_description(name)
    assert len(config_lib.preset_names()) >= 5


def test_bad_settings_name_the_value(tmp_path):
    with pytest.raises(ConfigError, match="precision 'half'"):
        validate(tiny(tmp_path, precision="half"))
    with pytest.raises(ConfigError, match="head_epochs"):
        weights = tmp_path / "b.keras"
        weights.write_bytes(b"")
        validate(tiny(tmp_path, init_backbone=str(weights), head_epochs=2))
    with pytest.raises(ConfigError, match="unknown preset"):
        config_lib.resolve("nope")


def write_chest_xrays(root: Path, per_class=(10, 4, 2)):
    """A chest_xray manual dir in the common train/val/test NORMAL/PNEUMONIA layout; pneumonia has an opacity."""
    rng = np.random.default_rng(0)
    for folder, n in zip(("train", "val", "test"), per_class):
        for label in ("NORMAL", "PNEUMONIA"):
            (root / folder / label).mkdir(parents=True)
            for i in range(n):
                image = rng.integers(40, 90, (64, 32)).astype(np.uint8)
                if label == "PNEUMONIA":
                    image[20:40, 6:26] = 220
                Image.fromarray(image).save(root / folder / label / f"{i}.png")
    return root


def test_pretrain_on_chest_xrays_then_fine_tune_head_first(tmp_path):
    from tfbonemet.tasks.pretrain import BACKBONE_FILE, pretrain

    manual = write_chest_xrays(tmp_path / "cxr")
    options = {"filters": [8, 16, 16]}
    pre = pretrain(config_lib.FitConfig(data="tfds:chest_xray", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual),
                                        image_height=64, image_width=32, epochs=1, batch_size=8, model_options=options,
                                        output_dir=str(tmp_path), run_name="pre"), log=quiet)
    assert json.loads((pre / "metrics.json").read_text())["classes"] == ["normal", "pneumonia"]
    backbone_file = pre / BACKBONE_FILE
    run_dir = train.fit(tiny(tmp_path, image_height=64, init_backbone=str(backbone_file), head_epochs=1,
                             finetune_lr_factor=1e-7, run_name="finetune"), log=quiet)
    pretrained = keras.models.load_model(backbone_file).get_layer("backbone")
    tuned = keras.models.load_model(run_dir / "model.keras").get_layer("backbone")
    for a, b in zip(pretrained.get_layer("stem").get_weights(), tuned.get_layer("stem").get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)  # frozen, then a negligible rate: still the pre-trained filters
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 1 + 2


@pytest.mark.slow
def test_cross_validation_writes_per_fold_and_mean_figures(tmp_path):
    from tfbonemet.tasks.cv import cross_validate

    cv_dir = cross_validate(tiny(tmp_path, epochs=1, run_name="cv"), folds=3, log=quiet)
    summary = json.loads((cv_dir / "cv.json").read_text())
    assert len(summary["per_fold"]) == 3 and set(summary["mean"]) == set(summary["std"])
    assert all((cv_dir / f"fold-{k}" / "model.keras").exists() for k in range(3))
    assert cross_validate(tiny(tmp_path, epochs=1, run_name="cv"), folds=3, log=quiet) == cv_dir  # resumes: no retrain


def test_intensity_scale_comes_from_the_data(tmp_path):
    """8-bit crops are read at their fixed full scale, counts per view; a configured value is kept."""
    from types import SimpleNamespace

    def split(peak):
        return SimpleNamespace(peak_value=lambda views: peak)
    two_view = recipe.fit_recipe(tiny(tmp_path))
    config = tiny(tmp_path)
    assert config.intensity_scale == "auto"
    assert recipe.intensity_scale(config, two_view, split(96.0), log=quiet) == "255"
    assert recipe.intensity_scale(config, two_view, split(1800.0), log=quiet) == "percentile"
    assert recipe.intensity_scale(tiny(tmp_path, intensity_scale=4095), two_view, split(96.0), log=quiet) == "4095"
    with pytest.raises(ConfigError, match="intensity_scale must be auto or percentile"):
        train.fit(tiny(tmp_path, intensity_scale="bright"), log=quiet)


def test_weight_average_is_what_the_run_keeps(tmp_path):
    """With weight_ema the best epoch is chosen on, and saved as, the averaged weights (not the raw ones)."""
    import keras

    long_epochs = dict(num_studies=64, batch_size=1, early_stopping=0)  # 45 steps an epoch: enough to average
    plain = train.fit(tiny(tmp_path, run_name="plain", weight_ema=0.0, **long_epochs), log=quiet)
    averaged = train.fit(tiny(tmp_path, run_name="ema", weight_ema=0.9, **long_epochs), log=quiet)
    a, b = (keras.models.load_model(d / "model.keras").get_weights() for d in (plain, averaged))
    assert any(not np.allclose(x, y) for x, y in zip(a, b))
    assert json.loads((averaged / "config.json").read_text())["weight_ema"] == 0.9
    with pytest.raises(ConfigError, match="weight_ema must be in"):
        train.fit(tiny(tmp_path, run_name="bad", weight_ema=1.5), log=quiet)
    assert recipe.weight_average_momentum(tiny(tmp_path), 100) == 0.99  # the default, at most one epoch's span
    assert recipe.weight_average_momentum(tiny(tmp_path), 81) == pytest.approx(1 - 1 / 81)
    assert recipe.weight_average_momentum(tiny(tmp_path), 10) == 0.0  # too few steps to average


def test_cross_validation_validates_on_training_folds(tmp_path):
    """Each fold trains and validates on the other folds (split as a data build splits) and is tested on
    its own; pooled out-of-fold predictions carry pseudonymous keys, each fold's threshold, referral and
    temperature, and the pooled figures count the referred studies out of the answered ones."""
    import csv

    from tfbonemet.tasks.cv import cross_validate

    lines = []
    cv_dir = cross_validate(tiny(tmp_path, epochs=1, run_name="cv", refer_coverage=0.5), folds=2, log=lines.append)
    summary = json.loads((cv_dir / "cv.json").read_text())
    sizes = [line for line in lines if line.startswith("Fold 1/2")][0]
    train_n, val_n, test_n = (int(word.rstrip(",")) for word in sizes.split()[3::2])
    assert val_n < test_n and val_n < train_n  # validation is carved from the training folds, not a whole fold
    rows = list(csv.DictReader((cv_dir / "predictions.csv").open()))
    assert len(rows) == train_n + val_n + test_n and {r["fold"] for r in rows} == {"0", "1"}
    assert len({r["study"] for r in rows}) == len(rows)  # every study tested exactly once
    pooled = summary["pooled"]
    assert set(pooled) == {"auc", "pr_auc", "f1", "ece", "ece_scaled", "coverage", "error_answered", "error_all",
                           "sensitivity_answered", "sensitivity_all", "specificity_answered", "specificity_all"}
    for name in ("auc", "pr_auc", "f1"):
        assert pooled[name]["ci95"][0] <= pooled[name]["value"] <= pooled[name]["ci95"][1]
    referred = [r["refer"] == "1" for r in rows]
    assert any(referred) and pooled["coverage"]["value"] == pytest.approx(1 - np.mean(referred))
    assert all(0 <= float(r["uncertainty"]) <= 1 and float(r["temperature"]) > 0 for r in rows)
    assert all(f["predict_seconds"] >= 0 and f["predict_seconds_without_uncertainty"] >= 0
               for f in summary["per_fold"])


def test_input_size_comes_from_the_data_without_upsampling(tmp_path):
    """No --image-size: the typical study size, rounded down to a multiple of 8, capped in pixels."""
    from types import SimpleNamespace

    def split(height, width):
        return SimpleNamespace(typical_size=lambda: (height, width))
    config = tiny(tmp_path, image_height=None, image_width=None)
    assert recipe.input_size(config, split(170, 68), log=quiet) == (168, 64)  # BS-80K chest crops
    assert recipe.input_size(config, split(1024, 256), log=quiet) == (512, 128)  # whole body, downsampled
    thorax = tiny(tmp_path, image_height=None, image_width=None, crop="thorax")
    assert recipe.input_size(thorax, split(1024, 256), log=quiet) == (288, 224)  # capped at 512x128 pixels
    assert recipe.input_size(tiny(tmp_path), split(170, 68), log=quiet) == (128, 32)  # an explicit size wins


def test_the_plan_resolves_everything_a_run_needs_before_training(tmp_path):
    """plan_fit leaves nothing to choose while training: size, intensity scale, precision, jit, batch, stages."""
    import math

    from tfbonemet.tasks.train.plan import plan_fit

    plan = plan_fit(tiny(tmp_path, image_height=None, image_width=None, precision="float32", jit="off"), quiet)
    config = plan.config
    assert config.image_height and config.image_width and config.intensity_scale != "auto"
    assert (config.precision, config.jit) == ("float32", "off")
    assert plan.preprocessor.image_size == (config.image_height, config.image_width)
    assert plan.batching.batch_size == config.batch_size * plan.replicas
    assert plan.steps_per_epoch == math.ceil(len(plan.train_split) / plan.batching.batch_size)
    assert [s.name for s in plan.stages] == ["train"] and not (tmp_path / "run").exists()
