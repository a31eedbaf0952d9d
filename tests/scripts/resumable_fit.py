"""A training run that `test_fault_tolerance.py` kills and resumes.

Usage: `python resumable_fit.py WORKDIR [--hang-at EPOCH BATCH]`

Trains a regularized MLP with Adam and `PruneCallback` for EPOCHS epochs, with
`BackupAndRestore` (WORKDIR/backup), a `ModelCheckpoint` per epoch
(WORKDIR/epoch_NN.keras) and a `CSVLogger` (WORKDIR/log.csv); the finished model goes
to WORKDIR/final.keras. With `--hang-at`, the run writes WORKDIR/hanging after that
training batch (0-based epoch and batch) and waits to be killed. Started again on the
same WORKDIR, it resumes from the backup.
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import DropNeuronRegularizer, PruneCallback  # noqa: E402

EPOCHS, THRESHOLD = 5, 0.05


class HangAt(keras.callbacks.Callback):
    """Announces itself after training batch `batch` of epoch `epoch`, then hangs."""

    def __init__(self, epoch, batch, marker):
        super().__init__()
        self.epoch, self.batch, self.marker, self.current = epoch, batch, marker, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            self.marker.write_text(f"{self.epoch} {self.batch}")
            time.sleep(600)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 12)).astype("float32")
    y = (x[:, :2].sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def build():
    keras.utils.set_random_seed(3)
    reg = DropNeuronRegularizer(li=3e-3, lo=3e-3)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="relu", kernel_regularizer=reg, name="h1"),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=reg, name="h2"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    return model


def callbacks(workdir, backup_first=True, files=True):
    """Backup and pruning, then (with `files`) a checkpoint per epoch and a CSV log."""
    backup = keras.callbacks.BackupAndRestore(str(workdir / "backup"))
    prune = PruneCallback(THRESHOLD)
    listed = [backup, prune] if backup_first else [prune, backup]
    if files:  # a crash leaves the CSV file open: only in processes that are killed
        listed.append(keras.callbacks.ModelCheckpoint(str(workdir / "epoch_{epoch:02d}.keras")))
        listed.append(keras.callbacks.CSVLogger(str(workdir / "log.csv"), append=True))
    return listed


def fit(model, callback_list):
    x, y = data()
    model.fit(
        x, y, epochs=EPOCHS, batch_size=32, shuffle=False, verbose=0, callbacks=callback_list
    )


def main(workdir, hang_at=None):
    workdir = pathlib.Path(workdir)
    model = build()
    callback_list = callbacks(workdir)
    if hang_at is not None:
        callback_list.append(HangAt(*hang_at, workdir / "hanging"))
    fit(model, callback_list)
    model.save(workdir / "final.keras")


if __name__ == "__main__":
    args = sys.argv[1:]
    hang = tuple(map(int, args[2:4])) if args[1:2] == ["--hang-at"] else None
    main(args[0], hang)
