"""Measuring a pruned model: slim it, check the slim model, count and time both.

`slim_and_measure` gives the figures of one run of `runner.run_once`: the
metric of the pruned and of the slim model, whether their outputs match,
alive units (`alive_units`), parameters, multiply-adds and the inference
speed-up (`timing.inference_speedup`).
"""

import keras
import numpy as np

from keras_dropneuron.experiments import timing
from keras_dropneuron.experiments.setups import Setup
from keras_dropneuron.layer_rules import rule_for
from keras_dropneuron.report import SparsityReport, sparsity_report
from keras_dropneuron.surgery import slim_model

SLIM_TOLERANCE = 1e-5  # relative: float32 rounding of a smaller sum, nothing more


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The experiment's metric (lower is better).

    Args:
        metric: `"error"` (classification error in %, from the class scores'
            argmax), `"nmse"` (mean squared error over the targets' mean
            square) or `"mse"`.
        y_true: Targets (class indices for `"error"`).
        y_pred: Predictions.

    Returns:
        The metric as a float.

    Example:

    >>> score("error", np.array([0, 1]), np.eye(2)[[0, 0]])
    50.0
    """
    y_pred = np.asarray(y_pred, dtype="float64")
    y_true = np.asarray(y_true)
    if metric == "error":
        return 100.0 * float(np.mean(np.argmax(y_pred, axis=-1) != y_true))
    y_true = y_true.astype("float64").reshape(y_pred.shape)
    mse = float(np.mean(np.square(y_pred - y_true)))
    return mse / float(np.mean(np.square(y_true))) if metric == "nmse" else mse


def alive_units(
    setup: Setup, report: SparsityReport, model: keras.Model, slim: keras.Model
) -> list[dict]:
    """Alive units per `setup.units` entry, from the sparsity report.

    Heads are counted by the attention rule, the units of layers the report
    has no row for from the slim model (what the surgeon kept).

    Args:
        setup: The experiment.
        report: `sparsity_report(model)`.
        model: The pruned model.
        slim: `slim_model(model)`.

    Returns:
        One dict `{"label", "alive", "total"}` per `setup.units` entry.
    """
    rows = {row["layer"]: row for row in report.to_list()}
    units = []
    for label, layer, side in setup.units:
        row = rows.get(layer)
        if side == "heads":
            # The surgeon's own test (with every head dead it keeps one).
            before = model.get_layer(layer)
            alive = int(np.sum(~rule_for(before).dead_heads(before, 0.0)))
            total = before.num_heads
        elif row is None:
            before, after = model.get_layer(layer), slim.get_layer(layer)
            if side == "inputs":
                alive, total = after.input.shape[-1], before.input.shape[-1]
            else:
                alive, total = after.output.shape[-1], before.output.shape[-1]
        elif side == "inputs":
            alive, total = row["inputs_alive"], row["inputs"]
        else:
            alive, total = row["units_alive"], row["units"]
        units.append({"label": label, "alive": int(alive), "total": int(total)})
    return units


def slim_and_measure(
    model: keras.Model, setup: Setup, x_test: np.ndarray, y_test: np.ndarray, quick: bool = False
) -> dict:
    """Slims the pruned model, checks that it computes the same outputs, and measures both.

    Dead input features go too (the paper counts them as pruned); the slim
    model then reads only the kept columns of the data.

    Args:
        model: The trained, pruned model.
        setup: The experiment.
        x_test: Test inputs.
        y_test: Test targets.
        quick: Time with fewer repeats. Defaults to `False`.

    Returns:
        The figures of the result, in its order: metric and the slim model's,
        the largest output deviation and `slim_matches` (within float
        rounding of the pruned model's outputs), compression, units,
        parameters, kept inputs, multiply-adds and inference times.
    """
    pruned_pred = model.predict(x_test, batch_size=256, verbose=0)
    slim, slim_report = slim_model(model, drop_inputs=True, return_report=True)
    (kept,) = slim_report.kept_inputs.values()
    x_slim = x_test[..., kept]
    slim_pred = slim.predict(x_slim, batch_size=256, verbose=0)
    deviation = float(np.max(np.abs(slim_pred - pruned_pred)))
    report = sparsity_report(model)
    totals = slim_report.totals()
    speed = timing.inference_speedup(
        model, slim, x_test[:256], x_slim[:256], repeats=5 if quick else 15
    )
    return {
        setup.metric: score(setup.metric, y_test, pruned_pred),
        "slim_" + setup.metric: score(setup.metric, y_test, slim_pred),
        "slim_max_abs_deviation": deviation,
        "slim_matches": deviation <= SLIM_TOLERANCE * (1 + float(np.max(np.abs(pruned_pred)))),
        "compression": report.totals["compression"],
        "units": alive_units(setup, report, model, slim),
        "params": totals["params_before"],
        "slim_params": totals["params_after"],
        "inputs_kept": int(len(kept)),
        "macs": totals["macs_before"],
        "slim_macs": totals["macs_after"],
        "speedup": speed["speedup"],
        "original_ms": speed["original_ms"],
        "slim_ms": speed["slim_ms"],
    }


def support_figures(model: keras.Model, support: np.ndarray) -> dict:
    """The sparse regression's support: the true one, the inputs `model` kept, and equality.

    Args:
        model: The pruned sparse-regression model (its first layer is `"hidden"`).
        support: The indices of the informative features.

    Returns:
        `support_true`, `support_found` (lists of indices) and `support_exact`.
    """
    kept = np.flatnonzero(np.any(model.get_layer("hidden").kernel.numpy() != 0, axis=1))
    return {
        "support_true": support.tolist(),
        "support_found": kept.tolist(),
        "support_exact": bool(np.array_equal(kept, support)),
    }
