"""TensorBoard summaries (PR curves, val AUC, CAM images, HParams) and training_curves.png."""
import types

import numpy as np
import pytest

from tfbonemet.tasks.train import tensorboard


def test_pr_curve_data_counts_and_rates():
    data = tensorboard.pr_curve_data(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]), num_thresholds=3)
    tp, fp, tn, fn, precision, recall = data  # thresholds 0, 0.5, 1
    np.testing.assert_array_equal(tp, [2, 1, 0])
    np.testing.assert_array_equal(fp, [2, 1, 0])
    np.testing.assert_array_equal(tn + fp, [2, 2, 2])
    np.testing.assert_array_equal(fn + tp, [2, 2, 2])
    np.testing.assert_allclose(precision, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(recall, [1.0, 0.5, 0.0])


def test_fixed_studies_show_both_classes():
    assert tensorboard.fixed_studies(np.array([0, 0, 0, 1, 0, 1]), 4) == [3, 0, 5, 1]
    assert tensorboard.fixed_studies(np.array([0, 0]), 4) == [0, 1]


@pytest.fixture(scope="module")
def logged(tiny_run_dir, tmp_path_factory):
    """The callbacks driven through one epoch on the tiny run's model and validation split, after the
    ValidationAUC whose probabilities they summarise (as in `fit`'s callback list)."""
    from tfbonemet.data.datasets import open_split
    from tfbonemet.data.pipeline import BatchConfig
    from tfbonemet.run import Run
    from tfbonemet.tasks.train.callbacks import ValidationAUC

    run = Run.load(tiny_run_dir)
    out = tmp_path_factory.mktemp("tb")
    split = open_split(run.config, "validation")
    validation = ValidationAUC(split.batches(run.preprocessor, BatchConfig(batch_size=8), training=False,
                                             task=run.config.task), split.task_labels(run.config.task),
                               loss=lambda probabilities: 0.0)
    callbacks = [validation, *tensorboard.tensorboard_callbacks(out, validation, split, run.preprocessor, run.config,
                                                                cam_studies=2)]
    for callback in callbacks:
        callback.set_model(run.model)
        callback.on_train_begin()
    for callback in callbacks:
        callback.on_epoch_end(0, {})
    return out / "logs"


def _tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def test_validation_pr_curves_auc_and_cam_images(logged):
    accumulator = _tags(logged / "validation")
    tags = set(accumulator.Tags()["tensors"])
    assert {"pr_curves/metastasis", "epoch_val_auc"} <= tags
    cams = sorted(t for t in tags if t.startswith("cams/validation-"))
    assert len(cams) == 2  # the fixed handful: one positive, one negative study
    assert accumulator.SummaryMetadata("pr_curves/metastasis").plugin_data.plugin_name == "pr_curves"
    pr = accumulator.Tensors("pr_curves/metastasis")[0]
    assert pr.step == 0 and tuple(d.size for d in pr.tensor_proto.tensor_shape.dim) == (6, tensorboard.PR_THRESHOLDS)
    image = accumulator.Tensors(cams[0])[0].tensor_proto
    assert image.string_val[2][:4] == b"\x89PNG"  # width, height, PNG


def test_hyperparameters_logged(logged):
    accumulator = _tags(logged / "hparams")
    tags = set(accumulator.Tags()["tensors"])
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= tags
    start = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert b"learning_rate" in start and b"two_view_net" in start and b"output_dir" not in start


def test_training_curves_png(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_accuracy,val_auc\n"
                                          "0,0.7,0.69,0.5,0.6\n1,0.5,0.55,0.7,0.9\n2,0.4,0.6,0.7,0.85\n")
    fig = tensorboard.training_curves_figure(tensorboard.read_history(tmp_path / "history.csv"))
    loss_ax, auc_ax = fig.axes
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "loss")
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["training", "validation"]
    assert "best epoch 2 (kept)" in [t.get_text() for t in auc_ax.get_legend().get_texts()]
    path = tensorboard.write_training_curves(tmp_path)
    assert path.name == "training_curves.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_fit_writes_curves_and_validation_summaries(tiny_run_dir):
    """`fit` itself wires the summaries in: a real run has the curves figure and per-epoch PR curves."""
    assert (tiny_run_dir / "training_curves.png").stat().st_size > 0
    accumulator = _tags(tiny_run_dir / "logs" / "validation")
    assert "pr_curves/metastasis" in accumulator.Tags()["tensors"]


def test_cam_images_follow_the_best_epoch_so_far(tmp_path, monkeypatch):
    """CAM overlays cost a model clone and a gradient pass: written only when validation AUC improves."""
    labels = np.array([0, 0, 1, 1])
    aucs = {0: [0.1, 0.6, 0.4, 0.9], 1: [0.1, 0.9, 0.6, 0.4], 2: [0.1, 0.2, 0.6, 0.9], 3: [0.1, 0.6, 0.4, 0.9]}
    validation = types.SimpleNamespace(labels=labels, probabilities=None)
    summaries = tensorboard.ValidationSummaries(tmp_path, validation, ("no_metastasis", "metastasis"), None,
                                                {"validation-1": {}})
    drawn = []
    monkeypatch.setattr(summaries, "_cams", drawn.append)
    summaries.on_train_begin()
    for epoch, positive in aucs.items():  # validation AUC 0.75, 0.5, 1.0, 0.75
        p = np.array(positive)
        validation.probabilities = np.stack([1 - p, p], axis=1)
        summaries.on_epoch_end(epoch, {})
    assert drawn == [0, 2]
