"""prune_to_budget on real MNIST: LeNet-300-100 and LeNet-5 at multiply-add targets.

Usage:

    python benchmarks/budget_mnist.py --out benchmarks/results/budget_mnist.jsonl
    python benchmarks/budget_mnist.py --nets lenet-5 --seeds 0 --targets 0.25
    python benchmarks/budget_mnist.py --tiny            # 512 random samples, for CI

For every net and seed, an unpenalized model is trained first (`--pretrain` epochs, Adam
1e-3): the "I already have a model" case. Then `prune_to_budget` prunes a copy of it to
each `target_macs`, with the last 10% of the training images as validation data (threshold
and accuracy check), and the slim model is scored on the 10,000 test images. One JSON line
per run (appended as soon as it ends, so partial results survive): the verified multiply-add
ratio, parameters, validation and test accuracy before and after, epochs, seconds and the
machine load.

The networks end in a separate `Softmax` layer (a Dense with a softmax activation is a
barrier for the surgeon, which would keep every unit feeding it).
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
NETS = ("lenet-300-100", "lenet-5")
# Epochs: pretraining, most epochs to reach the budget, fine-tuning (LeNet-5 epochs take
# about 20 times as long on this CPU).
EPOCHS = {"lenet-300-100": (10, 15, 3), "lenet-5": (3, 6, 1)}
# LeNet-5 has few, long epochs: a controller event every 25 batches (about 3 an epoch
# on 18000 images), each raising the strength less.
CONTROL = {"lenet-300-100": {}, "lenet-5": {"frequency": 25, "growth": 1.2}}
BATCH = 256


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch on stderr: the budget's figures."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        keys = ("loss", "macs_ratio", "macs_ratio_ahead", "penalty_scale", "budget_reached")
        figures = " ".join(f"{k}={logs[k]:.4g}" for k in keys if k in (logs or {}))
        print(f"{self.label} epoch {epoch}: {figures}", file=sys.stderr, flush=True)


def data(net: str, tiny: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST shaped for `net` as `(x, y, x_test, y_test)`; random images when `tiny`."""
    if tiny:
        rng = np.random.default_rng(0)
        x = rng.random((512, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=512)
        x_test, y_test = x[:128], y[:128]
    else:
        (x, y), (x_test, y_test) = load_mnist(str(MNIST))

    def shape(images):
        return images.reshape(len(images), -1) if net == "lenet-300-100" else images[..., None]

    return shape(x), y, shape(x_test), y_test


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of `x` that `model` classifies as `y`."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), 1) == y))


def run(
    net: str,
    seed: int,
    targets: list[float],
    tiny: bool,
    out: str | None,
    epochs: tuple[int, int, int],
    control: dict,
    train_samples: int | None = None,
) -> list[dict]:
    """Pretrains `net`, then runs `prune_to_budget` at every MACs target; one row each."""
    x, y, x_test, y_test = data(net, tiny)
    split = len(x) - len(x) // 10
    train, val = (x[:split], y[:split]), (x[split:], y[split:])
    if train_samples:  # the first images of the training part; validation stays the same
        train = (train[0][:train_samples], train[1][:train_samples])
    pretrain, budget_epochs, finetune = (1, 2, 1) if tiny else epochs
    keras.utils.set_random_seed(seed)
    model = _models.BUILDERS[net](softmax_layer=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(*train, epochs=pretrain, batch_size=BATCH, verbose=0)
    pretrain_s = time.perf_counter() - start
    before = {"val": accuracy(model, *val), "test": accuracy(model, x_test, y_test)}
    rows = []
    for target in targets:
        keras.utils.set_random_seed(seed)
        load = list(os.getloadavg())
        start = time.perf_counter()
        row = {
            "net": net,
            "seed": seed,
            "target_macs": target,
            "pretrain_epochs": pretrain,
            "pretrain_s": pretrain_s,
            "val_accuracy_before": before["val"],
            "test_accuracy_before": before["test"],
            "load_at_start": load,
            "control": control,
            "train_samples": len(train[0]),
        }
        try:
            slim, report = prune_to_budget(
                model,
                train,
                val,
                target_macs=target,
                max_accuracy_drop=0.005,
                epochs=budget_epochs,
                finetune_epochs=finetune,
                batch_size=BATCH,
                **control,
                callbacks=[EpochPrinter(f"{net} seed {seed} target {target}")],
            )
            row["status"] = "ok"
        except BudgetError as error:
            slim, report = error.model, error.report
            row["status"] = f"BudgetError: {error}"
            row["ratios"] = error.ratios
        row["seconds"] = time.perf_counter() - start
        if report is not None:
            totals = report.slim_report.totals()
            row.update(
                macs_ratio=report.ratios["macs"],
                params_ratio=report.ratios["params"],
                units_ratio=report.ratios["units"],
                macs=totals["macs_before"],
                slim_macs=totals["macs_after"],
                params=totals["params_before"],
                slim_params=totals["params_after"],
                val_accuracy_after=1 - report.error_after,
                test_accuracy_after=accuracy(slim, x_test, y_test),
                epochs_to_target=report.epochs_to_target,
                penalty_scale=report.penalty_scale,
                threshold=report.threshold,
                units_after=[r["units_after"] for r in report.slim_report.rows],
            )
        print(json.dumps(row), flush=True)
        if out:
            with open(out, "a") as file:
                file.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def table(path: str) -> str:
    """A Markdown table of the runs in the JSON-lines file `path`, per net and target."""
    with open(path) as file:
        rows = [json.loads(line) for line in file if line.strip()]
    groups = {}
    for row in rows:
        schedule = row["control"].get("schedule", "penalty")
        groups.setdefault((row["net"], row["target_macs"], schedule), []).append(row)
    lines = [
        "| net | target_macs | schedule | seeds | slim MACs / original (mean; each) | "
        "within 3% under | test accuracy before -> after (drop, points) | "
        "epochs to target | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (net, target, schedule), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])
    ):
        done = [r for r in runs if "macs_ratio" in r]
        ratios = [r["macs_ratio"] for r in done]
        before = np.mean([r["test_accuracy_before"] for r in done]) if done else float("nan")
        after = np.mean([r["test_accuracy_after"] for r in done]) if done else float("nan")
        status = ", ".join(sorted({r["status"].split(":")[0] for r in runs}))
        within = all(0.97 * target <= q <= target for q in ratios) and bool(ratios)
        lines.append(
            f"| {net} | {target:g} | {schedule} | {len(runs)} | "
            f"{np.mean(ratios) if ratios else float('nan'):.3f}; "
            f"{', '.join(f'{q:.3f}' for q in ratios)} | {'yes' if within else 'no'} | "
            f"{100 * before:.2f}% -> {100 * after:.2f}% ({100 * (before - after):+.2f}) | "
            f"{', '.join(str(r.get('epochs_to_target', '-')) for r in runs)} | {status} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = _common.parser(__doc__, repeats=1)
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    p.add_argument(
        "--train-samples", type=int, help="train on the first N images only (default: 54000)"
    )
    p.add_argument("--schedule", default="penalty", choices=("penalty", "gradual"))
    p.add_argument("--table", metavar="JSONL", help="print the Markdown table of earlier runs")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        return []
    rows = []
    for net in args.nets:
        for seed in args.seeds:
            control = {} if args.tiny else dict(CONTROL[net])
            control["schedule"] = args.schedule
            epochs, samples = EPOCHS[net], args.train_samples
            rows += run(net, seed, args.targets, args.tiny, args.out, epochs, control, samples)
    return rows


if __name__ == "__main__":
    main()
