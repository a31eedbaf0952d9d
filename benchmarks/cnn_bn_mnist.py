"""prune_to_budget on trained CNNs with BatchNormalization: ResNet-20, MobileNetV2, LeNet-5.

Usage:

    python benchmarks/cnn_bn_mnist.py --model resnet20 --train-size 20000 --epochs 3 \\
        --seeds 0 --targets 0.5 0.25 --out benchmarks/results/cnn_bn_mnist.json
    python benchmarks/cnn_bn_mnist.py --model mobilenetv2 --targets 0.5 \\
        --prune-kwargs '{"schedule": "penalty"}'
    python benchmarks/cnn_bn_mnist.py --tiny     # random images, seconds, for CI

Pruning after training: every model is first trained without penalties on the first
`--train-size` MNIST training images (Adam 1e-3, `--epochs`), its test accuracy recorded.
Then `prune_to_budget(model, train, val, target_macs=t)` prunes a copy to each target, with
`val` the last `--val-size` training images (held out from training; never the test set).
Per run: the slim model's test accuracy, the verified MAC ratio of the budget report, the
accuracy drop in points, and the speed-up at batch 64 on this machine (`predict_on_batch`
on one batch, original and slim timed alternately, median of `--repeats`) with the
efficiency `speedup / (1 / mac_ratio)`. A `BudgetError` (budget not reached, or the
validation accuracy dropped more than `max_accuracy_drop`) is caught and what it reached
is recorded with its message.

The networks, the training, the pruning settings and the bounds are those of the library's
trained-start experiments (`keras_dropneuron.experiments.trained_start`, also run by
`keras-dropneuron reproduce resnet20-trained`): `resnet20`, a ResNet-20 adapted to 28x28x1
(3 stages of 3 basic blocks, 16/32/64 channels, 1x1 projection shortcuts); `mobilenetv2`,
6 inverted residual blocks; `lenet5`, the paper's LeNet-5 (no BN). Every one ends in a
separate Softmax layer. This script adds the speed-up and other command-line overrides.

The bounds (`BOUNDS`: accuracy points lost at a MAC target) are printed beside the
figures, with the speed-up bound (efficiency at least 0.8).
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron.experiments import trained_setups, trained_start  # noqa: E402
from keras_dropneuron.experiments.data import load_mnist  # noqa: E402

MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
# This script's model names -> the library's trained-start experiments.
EXPERIMENTS = {
    "resnet20": trained_setups.EXPERIMENTS["resnet20-trained"],
    "mobilenetv2": trained_setups.EXPERIMENTS["mobilenetv2-trained"],
    "lenet5": trained_setups.EXPERIMENTS["lenet-5-trained"],
}
MODELS = {name: experiment.build for name, experiment in EXPERIMENTS.items()}
# (model, target_macs) -> most accuracy points the slim model may lose.
BOUNDS = {(name, t): b for name, e in EXPERIMENTS.items() for t, b in e.bounds.items()}
MIN_EFFICIENCY = 0.8  # speed-up at batch 64 at least 0.8 of 1 / mac_ratio
SPEED_BATCH = 64
accuracy = trained_start.accuracy


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr: the budget's figures."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        keys = ("loss", "macs_ratio", "macs_ratio_ahead", "penalty_scale", "budget_reached")
        figures = " ".join(f"{k}={logs[k]:.4g}" for k in keys if k in (logs or {}))
        elapsed = time.perf_counter() - self.start
        print(
            f"{self.label} epoch {epoch} ({elapsed:.0f}s): {figures}", file=sys.stderr, flush=True
        )


def data(args) -> tuple[tuple, tuple, tuple]:
    """`(train, val, test)` pairs: MNIST (val the last training images), or random images."""
    if args.tiny:
        rng = np.random.default_rng(0)
        x = rng.random((384, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, size=384)
        return (x[:256], y[:256]), (x[256:], y[256:]), (x[256:], y[256:])
    (x, y), (x_test, y_test) = load_mnist(str(MNIST))
    x, x_test = x[..., None], x_test[..., None]
    if args.train_size + args.val_size > len(x):
        raise SystemExit(f"--train-size + --val-size exceeds the {len(x)} training images")
    train = (x[: args.train_size], y[: args.train_size])
    val = (x[len(x) - args.val_size :], y[len(x) - args.val_size :])
    return train, val, (x_test, y_test)


def speed(original: keras.Model, slim: keras.Model, x: np.ndarray, repeats: int) -> dict:
    """Milliseconds per `predict_on_batch(x)` of both models, timed alternately."""
    fns = {
        "original": lambda: original.predict_on_batch(x),
        "slim": lambda: slim.predict_on_batch(x),
    }
    seconds = _common.alternate(fns, repeats)
    original_ms, slim_ms = 1000 * seconds["original"], 1000 * seconds["slim"]
    return {"original_ms": original_ms, "slim_ms": slim_ms, "speedup": original_ms / slim_ms}


def pretrain(name: str, seed: int, train: tuple, epochs: int) -> tuple[keras.Model, float]:
    """A model trained without penalties; `(model, seconds)` (see `trained_start.pretrain`)."""
    return trained_start.pretrain(MODELS[name], seed, train, epochs)


def prune_arguments(name: str, target: float, args) -> dict:
    """prune_to_budget's keyword arguments for `name` at `target` (JSON-serializable).

    The experiment's (`TrainedStart.prune_arguments`; with `--tiny` its quick settings:
    random images, a few steps, strong penalties and a high threshold), then the
    command line's overrides.
    """
    kwargs = EXPERIMENTS[name].prune_arguments(target, quick=args.tiny)
    if args.max_accuracy_drop:
        kwargs["max_accuracy_drop"] = args.max_accuracy_drop
    if args.learning_rate:
        kwargs["learning_rate"] = args.learning_rate
    kwargs.update(json.loads(args.prune_kwargs))
    return kwargs


def run_one(name, seed, target, model, splits, args, before) -> dict:
    """`prune_to_budget` of `model` at `target`; the row of figures."""
    train, val, test = splits
    kwargs = prune_arguments(name, target, args)
    row = {"model": name, "seed": seed, "target_macs": target, **before, "prune_kwargs": kwargs}
    row["load_at_start"] = list(os.getloadavg())
    keras.utils.set_random_seed(seed)
    label = f"{name} seed {seed} target {target}"
    figures, slim = trained_start.prune_and_measure(
        model, train, val, test, target, kwargs, callbacks=[EpochPrinter(label)]
    )
    row.update(figures)
    if slim is not None:
        row["drop_points"] = 100 * (row["test_accuracy_before"] - row["test_accuracy_after"])
        row.update(speed(model, slim, test[0][:SPEED_BATCH], args.repeats))
        row["efficiency"] = row["speedup"] * row["mac_ratio"]
    row.update(_verdict(row))
    print(json.dumps({k: v for k, v in row.items() if k != "units_after"}), file=sys.stderr)
    return row


def _verdict(row: dict) -> dict:
    """The issue's bounds beside the figures: `bound_points`, `accuracy_met`, `speed_met`."""
    bound = BOUNDS.get((row["model"], row["target_macs"]))
    if bound is None or "drop_points" not in row:
        return {"bound_points": bound}
    within_budget = row["mac_ratio"] <= row["target_macs"] * (1 + 1e-9)
    return {
        "bound_points": bound,
        "accuracy_met": bool(within_budget and row["drop_points"] <= bound),
        "speed_met": bool(row["efficiency"] >= MIN_EFFICIENCY),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = _common.parser(__doc__, repeats=15)
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--val-size", type=int, default=5000, help="last training images")
    p.add_argument("--epochs", type=int, default=3, help="training before pruning")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25])
    p.add_argument("--learning-rate", type=float, help="Adam's, for pruning (per model)")
    p.add_argument("--max-accuracy-drop", type=float, help="default: the issue's bound")
    p.add_argument(
        "--prune-kwargs", default="{}", help="JSON object of more prune_to_budget arguments"
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.targets = 1, [0.9]
    splits = data(args)
    train, _, (x_test, y_test) = splits
    rows = []
    started = time.perf_counter()
    for name in args.model:
        for seed in args.seeds:
            model, pretrain_s = pretrain(name, seed, train, args.epochs)
            before = {"test_accuracy_before": accuracy(model, x_test, y_test)}
            before["train_accuracy_before"] = accuracy(model, train[0][:5000], train[1][:5000])
            print(f"{name} seed {seed} trained: {before}", file=sys.stderr, flush=True)
            before.update(pretrain_s=pretrain_s, epochs=args.epochs, train_size=len(train[0]))
            for target in args.targets:
                rows.append(run_one(name, seed, target, model, splits, args, before))
                _common.finish(args, rows, seconds=time.perf_counter() - started)  # so far
    columns = ["model", "seed", "target_macs", "status", "test_accuracy_before"]
    columns += ["test_accuracy_after", "drop_points", "bound_points", "mac_ratio"]
    columns += ["speedup", "efficiency", "accuracy_met", "speed_met", "prune_s"]
    printable = [{**r, "status": r["status"].split(":")[0]} for r in rows]
    _common.print_table(printable, columns)
    _common.finish(args, rows, seconds=time.perf_counter() - started)
    return rows


if __name__ == "__main__":
    main()
