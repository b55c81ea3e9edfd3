"""`tfbonemet fit`: data -> ScanPreprocessor -> tf.data -> registered model -> run directory.

While a run trains, backup/ holds the last finished epoch (weights, optimizer, epoch) so `resume`
continues a killed run; the training stream is a pure function of the seed, so the resumed run
sees the batches the uninterrupted run would have seen. The finished run (tfbonemet.run) holds
the best epoch by validation AUC and the decision threshold chosen on validation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbonemet import execution, referral, signals
from tfbonemet import metrics as metrics_lib
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import check_writable, make_dir, save_model, write_json, write_text
from tfbonemet.io.lock import exclusive, join
from tfbonemet.models import finetune
from tfbonemet.run import (CONFIG_JSON, PREPROCESSOR_JSON, SERVING_PRECISION, load_keras_model, read_config,
                           read_preprocessor, serving_model)
from tfbonemet.tasks.train import distribute
from tfbonemet.tasks.train.callbacks import (BestCheckpoint, EpochBackup, RandomStateBackup, ResumableEarlyStopping,
                                             RestoreOnly, ValidationAUC, averaged_weights, diverged_error)
from tfbonemet.tasks.train.plan import FitPlan, make_plan, plan_fit
from tfbonemet.tasks.train.recipe import Stage, compile_model, fit_recipe, weight_average_momentum
from tfbonemet.tasks.train.run_dir import (FINISHED, RUN_LOCK, backed_up_epoch, epoch_finished, make_run_dir,
                                           read_history, sweep_runs, tidy, unfinished_run)
from tfbonemet.tasks.train.tensorboard import tensorboard_callbacks, write_training_curves


def fit(config: FitConfig, log=print, train_split: datasets.Split | None = None,
        val_split: datasets.Split | None = None) -> Path:
    """Train `config.model` and write a new run directory; returns its path.

    `train_split`/`val_split` replace the configured source's splits (cross-validation folds).
    """
    check_writable(config.output_dir)  # before the splits are read and the execution probe runs
    return run_plan(plan_fit(config, log, train_split, val_split), log)


def run_plan(plan: FitPlan, log) -> Path:
    """Create the run directory, record the plan's configuration and preprocessor, train; a run that fails
    before its first epoch is finished is removed again."""
    if plan.multi_worker:
        return _run_multi_worker(plan, log)
    sweep_runs(plan.config.output_dir, log)
    run_dir = make_run_dir(plan.config)
    try:
        with exclusive(run_dir / RUN_LOCK, f"run {run_dir}"):
            _record(plan, run_dir)
            return train_plan(plan, run_dir, log)
    except BaseException as exc:
        if not epoch_finished(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            _resume_hint(exc, run_dir)
        raise


def _record(plan: FitPlan, run_dir: Path) -> None:
    """config.json and preprocessor.json: what `--resume`, evaluate, export and predict read the run with."""
    write_text(run_dir / CONFIG_JSON, plan.config.to_json())
    write_text(run_dir / PREPROCESSOR_JSON, plan.preprocessor.to_json())


def _resume_hint(exc: BaseException, run_dir: Path) -> None:
    """A fit stopped by a signal says how to continue it."""
    if isinstance(exc, signals.Stopped):
        exc.hint = (f"the run keeps its best model and last finished epoch: continue with "
                    f"`tfbonemet fit --resume {run_dir}`")


def _run_multi_worker(plan: FitPlan, log) -> Path:
    """Every worker names the same run directory (--run-name) on shared storage; the chief creates and
    writes it, the others only read it. The same command started again (a worker restarted after a
    failure, as a cluster manager does) continues the unfinished run of the same configuration."""
    config = plan.config
    run_dir, job = Path(config.output_dir) / config.run_name, distribute.job_id()
    if not distribute.is_chief():  # reads only; refused while another job trains into the same run directory
        join(run_dir / RUN_LOCK, f"run {run_dir}", job)
        return train_plan(plan, run_dir, log)
    sweep_runs(config.output_dir, log)
    make_dir(run_dir)
    fresh = False
    try:
        with exclusive(run_dir / RUN_LOCK, f"run {run_dir}", job=job):  # the chief holds it for the whole job
            if unfinished_run(run_dir, config.to_json()):
                log(f"Continuing {run_dir} (same configuration)")
            elif (run_dir / CONFIG_JSON).exists():
                raise ConfigError(f"run directory {run_dir} already exists; choose another --run-name")
            else:  # new, or left by a chief killed before it wrote anything
                fresh = True
                _record(plan, run_dir)
            return train_plan(plan, run_dir, log)
    except BaseException:
        if fresh and not epoch_finished(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume(run_dir, log=print, train_split: datasets.Split | None = None,
           val_split: datasets.Split | None = None) -> Path:
    """Continue a killed run from its last backed-up epoch, with the configuration and preprocessor it started with.

    One process at a time: a second `fit --resume` of a run being trained is refused."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    job = distribute.job_id() if config.strategy == "multi-worker" else ""
    writer = not job or distribute.is_chief()
    if writer:
        holding = exclusive(run_dir / RUN_LOCK, f"run {run_dir}", job=job)
    else:  # a worker reads along with its job's chief, which holds the lock
        join(run_dir / RUN_LOCK, f"run {run_dir}", job)
        holding = contextlib.nullcontext()
    with holding:
        try:
            return _resume(run_dir, config, log, train_split, val_split, writer)
        except signals.Stopped as exc:
            _resume_hint(exc, run_dir)
            raise


def _resume(run_dir: Path, config: FitConfig, log, train_split, val_split, writer: bool = True) -> Path:
    if all((run_dir / name).exists() for name in FINISHED):
        left = tidy(run_dir) if writer else []
        if not left:
            raise ConfigError(f"run {run_dir} has already finished")
        log(f"Run {run_dir} had finished; removed {', '.join(left)}, left by a process killed as it ended")
        return run_dir
    if writer:  # only the chief of a multi-worker job writes (the others may run on other machines)
        tidy(run_dir, keep_best=True)
    log(f"Resuming {run_dir}")
    train_split = train_split or datasets.open_split(config, "train")
    val_split = val_split or datasets.open_split(config, "validation")
    plan = make_plan(config, fit_recipe(config), read_preprocessor(run_dir, config), train_split, val_split, log,
                     choose_execution=False)  # config.json holds the precision and jit it chose
    return train_plan(plan, run_dir, log)


def train_plan(plan: FitPlan, run_dir: Path, log) -> Path:
    """Train into `run_dir` (continuing from its backups, if any) and write the model and metrics.

    A non-chief worker of a multi-worker run reads `run_dir` (backups, history) and writes nothing.
    """
    config, recipe = plan.config, plan.recipe
    keras.utils.set_random_seed(config.seed)
    val_ds = plan.val_ds
    # the model and its optimizer are created in the strategy's scope; fit and its callbacks run outside it,
    # so that what only the chief does (saving) creates no variables the other workers would have to mirror
    with execution.dtype_policy(config.precision):
        with plan.strategy.scope():
            model = recipe.build()
            if config.init_backbone:
                finetune.load_backbone_weights(model, config.init_backbone)
                log(f"Loaded pre-trained backbone weights from {Path(config.init_backbone).name}")
        log(f"Training {config.model} ({model.count_params():,} parameters) on {len(plan.y_train)} studies, "
            f"validating on {len(plan.y_val)}; inputs {', '.join(plan.preprocessor.input_names)} "
            f"{config.image_height}x{config.image_width}; precision {config.precision}, XLA {config.jit}; "
            f"{plan.replicas} replica(s), global batch {plan.batching.batch_size}"
            + (f"; augmentation {config.augmentation}" if plan.augment else "")
            + ("; class-balanced sampling" if plan.batching.balanced else ""))
        for stage in plan.stages:
            diverged = _train_stage(plan, model, stage, run_dir, log)
            if diverged is not None:
                if not (run_dir / "best.keras").exists():
                    raise diverged_error(diverged)
                log(f"Warning: {diverged_error(diverged)}")
                break
    if not plan.writer:
        log(f"Worker finished; the chief writes {run_dir}")
        return run_dir
    return _finish(config, recipe, run_dir, model, val_ds, plan.y_val, log)


def _train_stage(plan: FitPlan, model, stage: Stage, run_dir: Path, log) -> int | None:
    """Train one stage; returns the epoch at which the model diverged, if it did."""
    config, recipe, strategy, steps = plan.config, plan.recipe, plan.strategy, plan.steps_per_epoch
    writer, multi_worker, val_ds, y_val = plan.writer, plan.multi_worker, plan.val_ds, plan.y_val
    backup_dir = run_dir / "backup" / stage.name
    start = backed_up_epoch(backup_dir)
    start = stage.first_epoch if start is None else start
    history = read_history(run_dir / "history.csv", before_epoch=start, rewrite=writer)
    if stage.first_epoch < start < stage.last_epoch:
        log(f"Resuming stage {stage.name} at epoch {start + 1} of {config.epochs}")
    if stage.name != "train":
        if stage.frozen_backbone:
            finetune.freeze_backbone(model)
        else:
            finetune.unfreeze(model, fraction=1.0)
        log(f"Stage {stage.name}: epochs {stage.first_epoch + 1}-{stage.last_epoch}, "
            f"learning rate {stage.learning_rate:g}, backbone {'frozen' if stage.frozen_backbone else 'trainable'}")
    with strategy.scope():
        compile_model(model, config, stage, steps, config.jit == "on")
    num_classes = len(recipe.class_names)

    def worker_input(num_shards: int, shard_index: int, replicas: int):
        """This worker's shard of the training stream, in per-replica batches, after the batches already trained."""
        shard = dataclasses.replace(plan.batching, batch_size=config.batch_size, num_shards=num_shards,
                                    shard_index=shard_index)
        done = (start - stage.first_epoch) * steps * replicas
        ds = plan.train_split.batches(plan.preprocessor, shard, training=True, task=recipe.task,
                                      augment=plan.augment, seed=config.seed, repeat=True, skip_batches=done)
        weights = plan.class_weights
        if weights is not None:  # as sample weights: Keras cannot map class weights over a distributed dataset
            table = tf.constant([weights[c] for c in range(num_classes)], tf.float32)
            ds = ds.map(lambda x, y: (x, y, tf.gather(table, y))).prefetch(tf.data.AUTOTUNE)
        if config.loss == "focal":
            ds = ds.map(lambda x, y, *rest: (x, keras.ops.one_hot(y, num_classes), *rest))
        return ds

    train_ds = distribute.distribute_input(strategy, worker_input)
    scores = [float(row["val_auc"]) for row in history if row.get("val_auc") not in (None, "", "nan")]
    # the split is predicted once per epoch, by ValidationAUC, and every validation figure comes from that pass:
    # Keras' own validation pass would predict it a second time (and under MultiWorkerMirroredStrategy it
    # fails on uneven validation batches)
    loss = keras.losses.get(model.loss)
    targets = keras.ops.one_hot(y_val, num_classes) if config.loss == "focal" else y_val
    validation = ValidationAUC(val_ds, y_val, lambda probabilities: float(np.mean(loss(targets, probabilities))))
    checkpoint, logs, stopping = [], [], []
    if writer:  # only the chief writes the run directory
        checkpoint = [BestCheckpoint(
            run_dir / "best.keras", monitor="val_auc", mode="max", save_best_only=True,
            initial_value_threshold=max(scores) if scores else None)]
        logs = [keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
                keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0)]
        # not under multi-worker (their summaries call Keras' predict: a collective there) nor for
        # pre-training (its dataset's own classes, no task)
        if recipe.task and not multi_worker:
            logs += tensorboard_callbacks(run_dir, validation, plan.val_split, plan.preprocessor, config, log=log)
    if config.early_stopping:
        stopping = [ResumableEarlyStopping(config.early_stopping, history)]
    # kept until the run is finished, so a resume after this stage restores its end state
    backups = [RandomStateBackup(backup_dir, write=writer),
               (EpochBackup if writer else RestoreOnly)(
                   str(backup_dir), double_checkpoint=True, delete_checkpoint=False)]
    # averaged weights are swapped in for validation, the best-epoch checkpoint and early stopping,
    # and out again before the backups, which keep the raw weights and the average apart
    swap_in, swap_out = averaged_weights() if weight_average_momentum(config, steps) else ([], [])
    callbacks = [*swap_in, validation, *checkpoint, *stopping, *logs, *swap_out, *backups]
    model.fit(train_ds, epochs=stage.last_epoch,
              initial_epoch=stage.first_epoch, steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
              verbose=1 if sys.stdout.isatty() else 2)
    return validation.diverged_at


def _finish(config, recipe, run_dir, model, val_ds, y_val, log) -> Path:
    """The best epoch becomes model.keras, then metrics.json with the operating threshold; only then are
    best.keras and the backups removed, so a kill at any point leaves the best model recoverable."""
    best_path = run_dir / "best.keras"
    if best_path.exists():
        model = load_keras_model(best_path)
    save_model(model, run_dir / recipe.model_file)
    # figures and threshold on the float32 numbers evaluate, predict and the exported model give
    probabilities = np.asarray(distribute.predict(serving_model(model), val_ds), np.float64)
    figures = metrics_lib.classification_metrics(y_val, probabilities)
    with (run_dir / "history.csv").open(newline="") as fh:
        epochs_run = max(0, sum(1 for _ in fh) - 1)
    payload = {"split": "validation", "task": recipe.task, "epochs_run": epochs_run,
               "classes": list(recipe.class_names), "inference_precision": SERVING_PRECISION, **figures}
    if probabilities.shape[1] == 2 and len(np.unique(y_val)) == 2:
        threshold = metrics_lib.operating_threshold(y_val, probabilities[:, 1], config.threshold_rule,
                                                    config.target_sensitivity)
        payload["operating_point"] = {
            "threshold": threshold, "rule": config.threshold_rule, "chosen_on": "validation",
            **({"target_sensitivity": config.target_sensitivity} if config.threshold_rule == "sensitivity" else {}),
            "figures": metrics_lib.binary_metrics(y_val, probabilities[:, 1], threshold)}
        if config.refer_coverage is not None or config.refer_sensitivity is not None:
            payload["referral"] = referral.choose_band(y_val, probabilities[:, 1], threshold, config.refer_coverage,
                                                       config.refer_sensitivity)
    temperature = metrics_lib.fit_temperature(y_val, probabilities)
    payload["calibration"] = {"temperature": temperature, "fitted_on": "validation",
                              "ece": metrics_lib.calibration(y_val, probabilities)["ece"],
                              "ece_scaled": metrics_lib.calibration(
                                  y_val, metrics_lib.with_temperature(probabilities, temperature))["ece"]}
    write_json(run_dir / "metrics.json", payload)
    write_training_curves(run_dir)
    tidy(run_dir)
    log("Validation: " + ", ".join(f"{k} {figures[k]:.3f}" for k in
                                   ("accuracy", "precision", "recall", "specificity", "f1", "auc")))
    if "operating_point" in payload:
        point = payload["operating_point"]
        log(f"Operating threshold {point['threshold']:.3f} ({point['rule']} on validation): "
            f"F1 {point['figures']['f1']:.3f}, recall {point['figures']['recall']:.3f}, "
            f"specificity {point['figures']['specificity']:.3f}")
    if "referral" in payload:
        log(referral.describe(payload["referral"]))
    log(f"Run directory: {run_dir}")
    return run_dir
