"""Keras callbacks of a training run: validation AUC, resumable early stopping, random-state backup,
the read-only restore of non-chief workers, and saves that a signal or a full disk cannot cut in half."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet import signals
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import temporary_name, write_json
from tfbonemet.tasks.train import distribute
from tfbonemet.tasks.train.run_dir import backed_up_epoch


class ValidationAUC(keras.callbacks.Callback):
    """Predicts the validation split once per epoch and adds `val_auc` (scikit-learn ROC AUC, one-vs-rest
    macro for multiclass), `val_loss` (`loss`: probabilities -> mean loss) and `val_accuracy` to its logs.

    A diverged model (NaN probabilities) stops training with a clear message; the best checkpoint
    written so far is kept. Under multi-worker training every worker predicts the whole split
    itself and all act on the chief's figures (and stop if any worker diverged), so all stop at
    the same epoch.
    """

    def __init__(self, dataset, labels, loss: Callable[[np.ndarray], float]):
        super().__init__()
        self.dataset = dataset
        self.labels = np.asarray(labels)
        self.loss = loss
        self.diverged_at = None
        self.forward = None
        self.probabilities = None  # this epoch's, for callbacks after this one (TensorBoard summaries)

    def on_train_begin(self, logs=None):
        self.forward = distribute.local_forward(self.model)  # traced once, not once per epoch

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.probabilities = distribute.predict(self.model, self.dataset, self.forward)
        logs = logs if logs is not None else {}
        strategy = self.model.distribute_strategy
        if distribute.total(strategy, float(not np.all(np.isfinite(probabilities)))) > 0:
            self.diverged_at = epoch
            self.model.stop_training = True
            logs["val_auc"] = float("nan")
            return
        logs["val_loss"] = distribute.chief_value(strategy, self.loss(probabilities))
        logs["val_accuracy"] = distribute.chief_value(strategy, float(np.mean(probabilities.argmax(-1) == self.labels)))
        logs["val_auc"] = distribute.chief_value(
            strategy, metrics_lib.classification_metrics(self.labels, probabilities)["auc"])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on val_auc whose patience counter carries over a resume (seeded from history.csv)."""

    def __init__(self, patience: int, history: list[dict]):
        super().__init__(monitor="val_auc", mode="max", patience=patience)
        self.history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        scores = [float(row["val_auc"]) for row in self.history if row.get("val_auc") not in (None, "", "nan")]
        if scores:
            best = int(np.argmax(scores))
            self.best, self.wait = scores[best], len(scores) - 1 - best


class RandomStateBackup(keras.callbacks.Callback):
    """Backs up the layers' random-generator states (dropout masks) beside BackupAndRestore's weights.

    BackupAndRestore restores weights and optimizer but not SeedGenerator states, so a resumed
    run would draw other dropout masks than the uninterrupted run. Listed before it, this writes
    an epoch's states before that epoch's backup and keeps the previous epoch's as well, so a
    kill between the two writes still finds the states matching the backup.
    """

    def __init__(self, backup_dir: Path, write: bool = True):
        super().__init__()
        self.path = Path(backup_dir) / "random_state.json"
        self.write = write  # non-chief workers only restore

    def states(self):
        return [v for v in self.model.variables if v.name == "seed_generator_state"]

    def saved(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def on_train_begin(self, logs=None):
        states = self.saved().get(str(backed_up_epoch(self.path.parent)))
        if states is not None and len(states) == len(self.states()):
            for variable, value in zip(self.states(), states):
                variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = {k: v for k, v in self.saved().items() if int(k) == epoch}
        write_json(self.path, {**kept, str(epoch + 1): [np.asarray(v).tolist() for v in self.states()]})


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """A non-chief worker's BackupAndRestore: restores the chief's backup (shared storage) and
    writes nothing; the workers' weights are identical, so the chief's backup is everyone's."""

    def on_train_begin(self, logs=None):
        self._load_model()

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def diverged_error(epoch: int) -> ConfigError:
    return ConfigError(f"training diverged at epoch {epoch + 1} (the model's outputs became NaN); "
                       f"lower --learning-rate. The best epoch before that was kept")


class _SwapOut(keras.callbacks.Callback):
    """Puts the raw weights back at the end of an epoch, after what should see the average."""

    def __init__(self, swap: keras.callbacks.SwapEMAWeights):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        if self.swap._ema_weights_in_model:
            self.swap._swap_variables()
            self.swap._ema_weights_in_model = False


def averaged_weights() -> tuple[list, list]:
    """Callbacks to place first and before the backups when the optimizer keeps a weight average (`weight_ema`)."""
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    return [swap], [_SwapOut(swap)]


def deferring(callback: type) -> type:
    """A Keras saving callback whose saves a SIGTERM or Ctrl-C does not cut short (tfbonemet.signals)."""
    class Deferring(callback):
        def _save_model(self, *args, **kwargs):
            with signals.deferred():
                return super()._save_model(*args, **kwargs)

    Deferring.__name__ = callback.__name__
    return Deferring


class EpochBackup(deferring(keras.callbacks.BackupAndRestore)):
    """BackupAndRestore whose weights and epoch files are each written to a temporary name and renamed, so a
    kill, a stop or a full disk during a backup leaves the previous backup readable (Keras writes in place)."""

    def _save_model(self):
        with signals.deferred():
            os.makedirs(self.backup_dir, exist_ok=True)
            with temporary_name(self._weights_path) as tmp:
                self.model.save_weights(str(tmp), overwrite=True)
            write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})


class BestCheckpoint(deferring(keras.callbacks.ModelCheckpoint)):
    """ModelCheckpoint writing the new best model to a temporary name and renaming it into place, so a
    full disk or a stop during the write leaves the previous best model whole."""

    def _save_model(self, *args, **kwargs):
        final = self.filepath
        try:
            with temporary_name(final) as tmp:
                self.filepath = str(tmp)
                super()._save_model(*args, **kwargs)
        finally:
            self.filepath = final
