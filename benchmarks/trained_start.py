"""A trained BatchNormalization CNN pruned to a budget: gradual schedule against penalties alone.

Usage:

    python benchmarks/trained_start.py --out benchmarks/results/trained_start.json
    python benchmarks/trained_start.py --tiny      # random images, one epoch, for CI

A Conv-BN-ReLU CNN (two such blocks with max-pooling, a third convolution, a Dense head
on the flattened maps) is trained on MNIST (`--train-size` images, `--pretrain-epochs`),
then `prune_to_budget(target_macs=...)` prunes a copy of it with each schedule from the
same trained weights:

- `penalty`: the controller steers the penalties' strength until units die;
- `gradual`: the weakest units (joint group magnitude: kernel column, BN's gamma and beta)
  are cut on a cubic schedule, the penalties on at their base strength.

The validation slice is the last 5,000 training images (the test set is never used to
choose anything). A row records the slim model's test accuracy, the verified fraction of
the multiply-adds it keeps, the epochs it took and the wall time, or the `BudgetError`.
"""

import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import BudgetError, prune_to_budget  # noqa: E402
from keras_dropneuron.experiments.data import load_mnist  # noqa: E402

MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
L = keras.layers
BATCH = 64
SCHEDULES = ("penalty", "gradual")


def build(seed: int) -> keras.Model:
    """(conv 3x3, BN, ReLU, max-pool) x 2, conv 3x3 + ReLU, Flatten, Dense softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for filters in (16, 32):
        h = L.Conv2D(filters, 3, padding="same")(h)
        h = L.BatchNormalization()(h)
        h = L.ReLU()(h)
        h = L.MaxPooling2D()(h)
    h = L.Conv2D(32, 3, padding="same", activation="relu")(h)
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(h)))


def data(tiny: bool, train_size: int) -> tuple[np.ndarray, ...]:
    """`(x, y, x_val, y_val, x_test, y_test)`."""
    if tiny:
        rng = np.random.default_rng(0)
        x = rng.random((640, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, size=640)
        return x[:512], y[:512], x[512:], y[512:], x[512:], y[512:]
    (x, y), (x_test, y_test) = load_mnist(str(MNIST))
    x, x_test = x[..., None], x_test[..., None]
    return x[:train_size], y[:train_size], x[-5000:], y[-5000:], x_test, y_test


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), 1) == y))


def prune(trained, schedule, target, epochs, arrays) -> dict:
    x, y, x_val, y_val, x_test, y_test = arrays
    start = time.perf_counter()
    row = {"schedule": schedule, "target_macs": target}
    try:
        slim, report = prune_to_budget(
            trained,
            (x, y),
            (x_val, y_val),
            target_macs=target,
            epochs=epochs,
            batch_size=BATCH,
            schedule=schedule,
            max_accuracy_drop=1.0,  # measured here, on the test set, not enforced
        )
    except BudgetError as error:
        row.update(error=str(error).split(". ")[0], seconds=time.perf_counter() - start)
        return row
    row.update(
        test_accuracy=accuracy(slim, x_test, y_test),
        macs_ratio=report.ratios["macs"],
        epochs_to_target=report.epochs_to_target,
        seconds=time.perf_counter() - start,
    )
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = _common.parser(__doc__, repeats=1)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--targets", nargs="+", type=float, default=[0.4])
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8, help="most epochs of penalized training")
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    args = p.parse_args(argv)
    arrays = data(args.tiny, args.train_size)
    pretrain, epochs = (1, 2) if args.tiny else (args.pretrain_epochs, args.epochs)
    rows = []
    for seed in args.seeds:
        trained = build(seed)
        trained.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        trained.fit(arrays[0], arrays[1], epochs=pretrain, batch_size=BATCH, verbose=0)
        before = accuracy(trained, arrays[4], arrays[5])
        for target in args.targets:
            for schedule in args.schedules:
                row = prune(trained, schedule, target, epochs, arrays)
                rows.append({"seed": seed, "trained_accuracy": before, **row})
    columns = ["seed", "target_macs", "schedule", "trained_accuracy", "test_accuracy"]
    columns += ["macs_ratio", "epochs_to_target", "seconds", "error"]
    _common.print_table(rows, columns)
    _common.finish(args, rows)
    return rows


if __name__ == "__main__":
    main()
