"""Experiments that start from a trained model: train without penalties, then prune to a budget.

The paper's experiments (`runner`) train with the penalties from scratch; users
bring trained models. A trained-start experiment trains its network without
penalties (`pretrain`: Adam with cosine decay to 0, batch 128),
records its test accuracy, then calls `prune_to_budget(model, train, val,
target_macs=t, ...)` for each target `t` and records the slim model's test
accuracy, the points it lost, the verified fractions of the multiply-adds and
parameters it keeps, and whether it met the experiment's bound. A
`BudgetError` is caught and what it reached is recorded.

The validation data of `prune_to_budget` (its threshold and its accuracy check)
is the last `val_size` training examples, never used to train; the test set only
measures.

Each experiment is a `TrainedStart` in `trained_setups.EXPERIMENTS`, named
`<network>-trained`.
`run_trained_start` runs one experiment over one seed; `reproduce` runs several
over seeds and writes `results.json` and `results.md`.

Example:

>>> rows = run_trained_start("resnet20-trained", seed=0, quick=True, mnist="mnist.npz")
"""

import json
import pathlib
import time
from collections.abc import Callable

import keras
import numpy as np

from keras_dropneuron.budget import BudgetError, prune_to_budget
from keras_dropneuron.experiments.data import load_mnist
from keras_dropneuron.experiments.trained_setups import (
    ANCHORS,
    PRETRAIN_BATCH,
    PRETRAIN_LEARNING_RATE,
    QUICK_TARGETS,
    QUICK_TEST,
    QUICK_TRAIN,
    QUICK_VAL,
    TrainedStart,
    check_name,
)

Arrays = tuple[np.ndarray, np.ndarray]


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of `x` that `model` classifies as `y` (argmax of its outputs)."""
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), 1) == y))


def pretrain(
    build: Callable[[], keras.Model],
    seed: int,
    train: Arrays,
    epochs: int,
    learning_rate: float = PRETRAIN_LEARNING_RATE,
) -> tuple[keras.Model, float]:
    """Trains a new network without penalties.

    Adam from `learning_rate` with cosine decay to 0, batch 128. At a constant 1e-3 the BN
    networks end a short training with moving statistics that lag the
    still-moving weights: a ResNet-20 trained 3 epochs on 20,000 images scored
    54.8% on the test set in inference mode. Decaying the rate lets the
    weights, and so the statistics, settle.

    Args:
        build: `build() -> keras.Model`, the uncompiled network.
        seed: Seed of the weights and the data order.
        train: `(x, y)` with integer labels.
        epochs: Training epochs.
        learning_rate: Adam's first learning rate. Defaults to
            `PRETRAIN_LEARNING_RATE`.

    Returns:
        `(model, seconds)`: the trained model and the training's wall time.
    """
    keras.utils.set_random_seed(seed)
    model = build()
    steps = epochs * -(-len(train[0]) // PRETRAIN_BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(*train, epochs=epochs, batch_size=PRETRAIN_BATCH, verbose=0)
    return model, time.perf_counter() - start


def _report_figures(report) -> dict:
    """The figures of a `BudgetReport`: ratios, counts, validation accuracies, units."""
    totals = report.slim_report.totals()
    return {
        "mac_ratio": report.ratios["macs"],
        "params_ratio": report.ratios["params"],
        "macs": totals["macs_before"],
        "slim_macs": totals["macs_after"],
        "params": totals["params_before"],
        "slim_params": totals["params_after"],
        "val_accuracy_before": 1 - report.error_before,
        "val_accuracy_after": 1 - report.error_after,
        "epochs_to_target": report.epochs_to_target,
        "penalty_scale": report.penalty_scale,
        "threshold": report.threshold,
        "units_after": {r["name"]: r["units_after"] for r in report.slim_report.rows},
    }


def prune_and_measure(
    model: keras.Model,
    train: Arrays,
    val: Arrays,
    test: Arrays,
    target: float,
    arguments: dict,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[dict, keras.Model | None]:
    """`prune_to_budget` of `model` at `target`, and the slim model's test accuracy.

    Args:
        model: The trained model (never modified).
        train, val, test: `(x, y)` pairs: to train on, for the threshold and
            the accuracy check, to measure.
        target: The fraction of the multiply-adds to keep.
        arguments: `prune_to_budget`'s keyword arguments, `learning_rate`
            (Adam's) among them.
        callbacks: More callbacks for `prune_to_budget`. Defaults to `None`.

    Returns:
        `(figures, slim)`: `status` (`"ok"` or `"BudgetError: <message>"`),
        `prune_s`, the report's figures (`mac_ratio`, `params_ratio`, ...)
        when a slim model was built, else `ratios` (what the training
        reached), and `test_accuracy_after`; `slim` is `None` when none was
        built.
    """
    call = dict(arguments)
    call["optimizer"] = keras.optimizers.Adam(call.pop("learning_rate"))
    figures = {}
    start = time.perf_counter()
    try:
        slim, report = prune_to_budget(
            model, train, val, target_macs=target, callbacks=callbacks, **call
        )
        figures["status"] = "ok"
    except BudgetError as error:
        slim, report = error.model, error.report
        figures["status"] = f"BudgetError: {error}"
        figures["ratios"] = error.ratios
    figures["prune_s"] = time.perf_counter() - start
    if report is not None:
        figures.update(_report_figures(report))
    elif figures.get("ratios"):
        figures["mac_ratio"] = figures["ratios"]["macs"]
        figures["params_ratio"] = figures["ratios"]["params"]
    figures["test_accuracy_after"] = None if slim is None else accuracy(slim, *test)
    return figures, slim


def load_splits(
    experiment: TrainedStart, quick: bool, mnist: str | None
) -> tuple[Arrays, Arrays, Arrays]:
    """`(train, val, test)` inputs and integer labels: MNIST, or the experiment's `load`.

    MNIST images have shape `(28, 28, 1)`, or `(28, 28)` for an experiment of
    `sequences`. `train` is the first `train_size` training examples, `val`
    the last `val_size` ones (held out of training), `test` the test set;
    quick mode keeps `QUICK_TRAIN`, `QUICK_VAL` and `QUICK_TEST` of them.
    """
    if experiment.load is not None:
        (x, y), (x_test, y_test) = experiment.load()
    else:
        (x, y), (x_test, y_test) = load_mnist(mnist)
    if not (experiment.sequences or experiment.load):
        x, x_test = x[..., None], x_test[..., None]
    val_size = experiment.val_size
    train_size = len(x) - val_size if experiment.train_size is None else experiment.train_size
    if quick:
        train_size, val_size = QUICK_TRAIN, QUICK_VAL
        x_test, y_test = x_test[:QUICK_TEST], y_test[:QUICK_TEST]
    if train_size + val_size > len(x):
        raise ValueError(
            f"Invalid sizes of experiment {experiment.name!r}: expected train_size + "
            f"val_size <= {len(x)}. Received: {train_size} + {val_size}"
        )
    return (x[:train_size], y[:train_size]), (x[-val_size:], y[-val_size:]), (x_test, y_test)


def _verdict(row: dict, bound: float | None) -> dict:
    """`drop_points` and `met`: returned by `prune_to_budget` (no `BudgetError`), within
    the budget and at most `bound` points lost."""
    if row["test_accuracy_after"] is None:
        return {"drop_points": None, "met": False}
    drop = 100 * (row["test_accuracy_before"] - row["test_accuracy_after"])
    within = row.get("mac_ratio") is not None and row["mac_ratio"] <= row["target_macs"] + 1e-9
    met = None if bound is None else (row["status"] == "ok" and within and drop <= bound)
    return {"drop_points": drop, "met": met}


def run_trained_start(
    name: str,
    seed: int = 0,
    quick: bool = False,
    mnist: str | None = None,
    targets: tuple[float, ...] | None = None,
    epochs: int | None = None,
    verbose: int = 0,
    out: str | pathlib.Path | None = None,
) -> list[dict]:
    """Trains one experiment's network, then prunes it to each target.

    Args:
        name: Experiment name (a key of `EXPERIMENTS`).
        seed: Seed of the weights and the data order. Defaults to `0`.
        quick: `QUICK_TRAIN` training images, 1 epoch, the targets
            `QUICK_TARGETS` with `QUICK_PRUNE`'s settings (accuracy check
            relaxed; no bound). Defaults to `False`.
        mnist: Path of a local `mnist.npz` (see `data.load_mnist`).
            Defaults to `None`.
        targets: Fractions of the multiply-adds to keep; `None` is the
            experiment's (or `QUICK_TARGETS`). Defaults to `None`.
        epochs: Epochs of training without penalties; `None` is the
            experiment's `pretrain_epochs` (1 in quick mode). Defaults to
            `None`.
        verbose: `prune_to_budget`'s `fit` verbosity. Defaults to `0`.
        out: A folder to save each slim model built into, as
            `<name>_seed<seed>_macs<target>.keras` (the row's `slim_model`);
            `None` saves nothing. Defaults to `None`.

    Returns:
        One row per target, of JSON values: `experiment`, `seed`, `quick`,
        `target_macs`, `test_accuracy_before`, `test_accuracy_after` (`None`
        without a slim model), `drop_points` (accuracy points lost),
        `bound_points`, `met`, `mac_ratio`, `params_ratio`, `status`, the
        budget report's other figures, `prune_kwargs`, and with `out`
        `slim_model` (the saved file).

    Raises:
        ValueError: For an unknown `name`.
    """
    experiment = check_name(name)
    train, val, test = load_splits(experiment, quick, mnist)
    epochs = 1 if quick else (epochs or experiment.pretrain_epochs)
    if targets is None:
        targets = QUICK_TARGETS if quick else experiment.targets
    model, pretrain_s = pretrain(
        experiment.build, seed, train, epochs, experiment.pretrain_learning_rate
    )
    before = {
        "experiment": name,
        "seed": seed,
        "quick": quick,
        "pretrain_epochs": epochs,
        "train_size": len(train[0]),
        "pretrain_s": pretrain_s,
        "test_accuracy_before": accuracy(model, *test),
    }
    rows = []
    for target in targets:
        arguments = {**experiment.prune_arguments(target, quick), "verbose": verbose}
        bound = None if quick else experiment.bound(target)
        keras.utils.set_random_seed(seed)
        figures, slim = prune_and_measure(model, train, val, test, target, arguments)
        row = {**before, "target_macs": target, "bound_points": bound, **figures}
        if out and slim is not None:
            path = pathlib.Path(out) / f"{name}_seed{seed}_macs{target:g}.keras"
            slim.save(path)
            row["slim_model"] = str(path)
        row.update(_verdict(row, bound), prune_kwargs=arguments)
        rows.append(row)
    return rows


def _cell(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    """The table of trained-start rows, one line per experiment, seed and target.

    Args:
        rows: Rows of `run_trained_start`.

    Returns:
        The Markdown table, lines joined by newlines.
    """
    lines = [
        "| experiment | seed | target | accuracy before | accuracy after | drop (points) "
        "| bound | met | MAC ratio | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        after = r["test_accuracy_after"]
        met = {None: "-", True: "yes", False: "no"}[r["met"]]
        lines.append(
            f"| {r['experiment']} | {r['seed']} | {r['target_macs']:g} "
            f"| {100 * r['test_accuracy_before']:.2f}% "
            f"| {'-' if after is None else f'{100 * after:.2f}%'} "
            f"| {_cell(r['drop_points'], '.2f')} | {_cell(r['bound_points'], 'g')} | {met} "
            f"| {_cell(r.get('mac_ratio'), '.3f')} | {r['status'].split(':')[0]} |"
        )
    return "\n".join(lines)


def reproduce(
    names: list[str],
    seeds: tuple[int, ...] = (0,),
    quick: bool = False,
    mnist: str | None = None,
    out: str | pathlib.Path | None = None,
    plots: bool = False,
    verbose: int = 0,
    epochs: int | None = None,
) -> list[dict]:
    """Runs trained-start experiments over seeds; writes JSON, Markdown and a figure.

    With `out`, writes `results.json` (every row, rewritten after each
    experiment and seed so a long run keeps what it finished), `results.md`
    (`markdown_table`) and the slim models, and with `plots`
    `accuracy_vs_macs.png` (`plots.plot_accuracy_vs_macs`, needs matplotlib).

    Args:
        names: Experiment names (keys of `EXPERIMENTS`).
        seeds: Seeds to run. Defaults to `(0,)`.
        quick: See `run_trained_start`. Defaults to `False`.
        mnist: See `run_trained_start`. Defaults to `None`.
        out: Output folder, created if missing; `None` writes nothing.
            Defaults to `None`.
        plots: Whether to draw the figure into `out`. Defaults to `False`.
        verbose: See `run_trained_start`. Defaults to `0`.
        epochs: See `run_trained_start`. Defaults to `None`.

    Returns:
        Every row of `run_trained_start`.

    Raises:
        ValueError: For an unknown name (before anything runs).
    """
    for name in names:
        check_name(name)
    out = pathlib.Path(out) if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        for seed in seeds:
            print(f"== {name} / seed {seed}", flush=True)
            rows += run_trained_start(
                name, seed, quick, mnist, epochs=epochs, verbose=verbose, out=out
            )
            if out:
                (out / "results.json").write_text(json.dumps(rows, indent=2))
    table = markdown_table(rows)
    print(table)
    if out:
        (out / "results.md").write_text(table + "\n")
        if plots:
            from keras_dropneuron.experiments import plots as figures  # matplotlib when asked

            figures.plot_accuracy_vs_macs(rows, out / "accuracy_vs_macs.png", ANCHORS)
    return rows
