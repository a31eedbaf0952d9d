"""prune_to_budget on trained CNNs with BatchNormalization: ResNet-20, MobileNetV2, LeNet-5.

Usage:

    python benchmarks/cnn_bn_mnist.py --model resnet20 --train-size 20000 --epochs 3 \\
        --seeds 0 --targets 0.5 0.25 --out benchmarks/results/cnn_bn_mnist.json
    python benchmarks/cnn_bn_mnist.py --model mobilenetv2 --targets 0.5 \\
        --prune-kwargs '{"finetune_epochs": 3}'
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

The networks (`benchmarks/_models.py`): `resnet20`, a ResNet-20 adapted to 28x28x1 (3
stages of 3 basic blocks, 16/32/64 channels, 1x1 projection shortcuts); `mobilenetv2`, 6
inverted residual blocks; `lenet5`, the paper's LeNet-5 (no BN), as in
`benchmarks/budget_mnist.py`. Every one ends in a separate Softmax layer.

The issue's bounds (`BOUNDS`: accuracy points lost at a MAC target) are printed beside the
figures, with the speed-up bound (efficiency at least 0.8).
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import prune_to_budget  # noqa: E402
from keras_dropneuron.budget import BudgetError  # noqa: E402
from keras_dropneuron.experiments.data import load_mnist  # noqa: E402

MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
MODELS = {
    "resnet20": _models.resnet20,
    "mobilenetv2": _models.mobilenet_v2_small,
    "lenet5": lambda: _models.lenet_5(softmax_layer=True),
}
# The targets: (model, target_macs) -> most accuracy points the slim model may lose.
BOUNDS = {("resnet20", 0.5): 0.2, ("resnet20", 0.25): 0.5, ("mobilenetv2", 0.5): 0.5}
BOUNDS[("lenet5", 0.25)] = 0.5
MIN_EFFICIENCY = 0.8  # speed-up at batch 64 at least 0.8 of 1 / mac_ratio
SPEED_BATCH = 64
# prune_to_budget's arguments per model (`--prune-kwargs` overrides and extends them).
# Adam moves each weight by about its learning rate per step whatever the penalty's size,
# so a BN group (gamma near 1) needs hundreds of steps to reach 0: small batches and a
# higher learning rate for the BN networks. A controller event every `frequency` batches
# (about 4 an epoch), each raising the strength less (`growth`).
PRUNE = {
    "resnet20": {"epochs": 6, "finetune_epochs": 2, "li": 1e-3, "lo": 0.0},
    "mobilenetv2": {"epochs": 6, "finetune_epochs": 2, "li": 1e-3, "lo": 0.0},
    "lenet5": {"epochs": 6, "finetune_epochs": 1, "li": 4e-4, "lo": 4e-4, "frequency": 25},
}
for _bn_net in ("resnet20", "mobilenetv2"):
    PRUNE[_bn_net].update(batch_size=64, frequency=80, learning_rate=2e-3)
COMMON = {"growth": 1.2, "batch_size": 128, "threshold": 1e-2, "learning_rate": 1e-3}


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


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of `x` that `model` classifies as `y`."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), 1) == y))


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
    """A model trained without penalties; `(model, seconds)`.

    Adam from 1e-3 with cosine decay to 0, batch 128. At a constant 1e-3 the BN networks
    end a short training with moving statistics that lag the still-moving weights: a
    ResNet-20 trained 3 epochs on 20,000 images scored 54.8% on the test set in inference
    mode. Decaying the rate lets the weights, and so the statistics, settle.
    """
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    steps = epochs * -(-len(train[0]) // 128)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(*train, epochs=epochs, batch_size=128, verbose=0)
    return model, time.perf_counter() - start


def prune_arguments(name: str, target: float, args) -> dict:
    """prune_to_budget's keyword arguments for `name` at `target` (JSON-serializable)."""
    kwargs = {**COMMON, **PRUNE[name]}
    bound = BOUNDS.get((name, target), 0.5)
    kwargs["max_accuracy_drop"] = args.max_accuracy_drop or bound / 100
    if args.learning_rate:
        kwargs["learning_rate"] = args.learning_rate
    if args.tiny:
        # Random images, a few steps: strong penalties and a high threshold reach the target.
        kwargs.update(epochs=3, finetune_epochs=1, li=3e-2, lo=0.0, frequency="epoch")
        kwargs.update(max_accuracy_drop=1.0, growth=2.0, threshold=0.5, batch_size=32)
    kwargs.update(json.loads(args.prune_kwargs))
    return kwargs


def run_one(name, seed, target, model, splits, args, before) -> dict:
    """`prune_to_budget` of `model` at `target`; the row of figures."""
    train, val, (x_test, y_test) = splits
    kwargs = prune_arguments(name, target, args)
    call = dict(kwargs)
    learning_rate = call.pop("learning_rate")
    call.setdefault("optimizer", keras.optimizers.Adam(learning_rate))
    row = {"model": name, "seed": seed, "target_macs": target, **before, "prune_kwargs": kwargs}
    row["load_at_start"] = list(os.getloadavg())
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    label = f"{name} seed {seed} target {target}"
    try:
        slim, report = prune_to_budget(
            model, train, val, target_macs=target, callbacks=[EpochPrinter(label)], **call
        )
        row["status"] = "ok"
    except BudgetError as error:
        slim, report = error.model, error.report
        row["status"] = f"BudgetError: {error}"
        row["ratios"] = error.ratios
    row["prune_s"] = time.perf_counter() - start
    if report is not None:
        totals = report.slim_report.totals()
        row.update(
            mac_ratio=report.ratios["macs"],
            params_ratio=report.ratios["params"],
            macs=totals["macs_before"],
            slim_macs=totals["macs_after"],
            params=totals["params_before"],
            slim_params=totals["params_after"],
            val_accuracy_before=1 - report.error_before,
            val_accuracy_after=1 - report.error_after,
            epochs_to_target=report.epochs_to_target,
            penalty_scale=report.penalty_scale,
            threshold=report.threshold,
            units_after={r["name"]: r["units_after"] for r in report.slim_report.rows},
        )
    if slim is not None:
        row["test_accuracy_after"] = accuracy(slim, x_test, y_test)
        row["drop_points"] = 100 * (row["test_accuracy_before"] - row["test_accuracy_after"])
        row.update(speed(model, slim, x_test[:SPEED_BATCH], args.repeats))
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
