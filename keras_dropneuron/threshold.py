"""Choose the pruning threshold by the paper's own principle."""

from collections.abc import Callable

import keras
import numpy as np

from keras_dropneuron import checks, cloning, model_utils, pruning


def default_thresholds() -> list[float]:
    """The candidate thresholds tried by default: 25 from 1e-4 to 1 on a log scale."""
    return np.geomspace(1e-4, 1.0, 25).tolist()


def default_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The error rate for class scores with integer labels, else the mean squared error.

    Class scores lie on the last axis, so sequence outputs `(n, T, k)` with
    labels `(n, T)` are scored per step.

    Args:
        y_true: Integer labels `(n,)` (or `(n, 1)`; `(n, T)` for scores
            `(n, T, k)`), or targets shaped like `y_pred`.
        y_pred: The model's outputs.

    Returns:
        `mean(argmax(y_pred, -1) != y_true)` when `y_pred` holds one score
        per class (`k > 1`) and `y_true` one label per score vector, else
        `mean((y_pred - y_true) ** 2)`.

    Raises:
        ValueError: If `y_true` fits neither form.
    """
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1 and y_true.size * y_pred.shape[-1] == y_pred.size:
        labels = y_true.reshape(y_pred.shape[:-1])
        return float(np.mean(np.argmax(y_pred, axis=-1) != labels))
    if y_true.size != y_pred.size:
        raise ValueError(
            "Invalid value for argument `y_true`: expected one label per score vector "
            f"or targets shaped like the outputs {y_pred.shape}. Received: y_true of "
            f"shape {y_true.shape}"
        )
    return float(np.mean(np.square(y_pred - y_true.reshape(y_pred.shape))))


def choose_threshold(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    tolerance: float = 0.0,
    thresholds: list[float] | None = None,
    mode: str = "weight",
    score: Callable[[np.ndarray, np.ndarray], float] | None = None,
    batch_size: int = 256,
) -> tuple[float, dict[float, float]]:
    """Returns the largest threshold whose pruned model loses nothing on `(x, y)`.

    Dropping principle 1 of DropNeuron: prune with the largest threshold that
    keeps the validation score within `tolerance` of the unpruned model's.
    Each candidate is tried on a copy; `model` is not modified.

    Args:
        model: A Sequential or Functional model.
        x, y: Validation data.
        tolerance: Allowed increase of the score (lower is better).
            Defaults to `0.0`.
        thresholds: A list of candidate thresholds, finite floats >= 0.
            Defaults to `None`: 25 values from 1e-4 to 1 on a log scale.
        mode: Pruning mode, see `prune_weights`. Defaults to `"weight"`.
        score: `score(y_true, y_pred) -> float`, lower is better. Defaults to
            `None`: the error rate for class scores with integer labels, else
            the mean squared error.
        batch_size: Prediction batch size. Defaults to `256`.

    Returns:
        `(threshold, scores)`: the chosen threshold (0.0 if none qualifies) and
        a dict mapping every tried threshold to its score. The search stops at
        the first threshold that loses more than `tolerance` or would remove
        every unit of a layer (see `prune_weights`).

    Raises:
        TypeError: If `model` is not a Keras model, `tolerance` or a threshold
            not a number, `thresholds` not a list, `mode` not a str, `score`
            not callable or `batch_size` not an int.
        ValueError: For subclassed or unbuilt models, models without supported
            layers or with weights that are not finite, a negative, NaN or
            infinite `tolerance` or threshold, an unknown `mode` or a
            `batch_size` below 1. All are checked before anything is tried.

    Example:

    >>> threshold, scores = choose_threshold(model, x_val, y_val, tolerance=0.01)
    >>> prune_weights(model, threshold)
    """
    tolerance = checks.check_non_negative_float("tolerance", tolerance)
    if thresholds is None:
        thresholds = default_thresholds()
    thresholds = checks.check_sequence_of(
        "thresholds", thresholds, object, "None or a list of floats"
    )
    candidates = sorted(
        checks.check_non_negative_float(f"thresholds[{i}]", t) for i, t in enumerate(thresholds)
    )
    checks.check_choice("mode", mode, pruning.PRUNE_MODES)
    score = default_score if score is None else checks.check_callable("score", score)
    batch_size = checks.check_int("batch_size", batch_size, 1)
    checks.check_model("model", model)
    layers = model_utils.select_layers(model)
    model_utils.check_has_supported_layers(model, layers)
    model_utils.check_finite_weights(layers, "choose a threshold for")
    baseline = score(y, model.predict(x, batch_size=batch_size, verbose=0))
    trial = cloning.clone_model(model)
    scores = {0.0: baseline}
    chosen = 0.0
    for threshold in candidates:
        trial.set_weights(model.get_weights())
        try:
            pruning.prune_weights(trial, threshold, mode=mode)
        except pruning.UnitsWouldVanishError:
            break  # it would remove every unit of a layer, as would larger ones
        scores[threshold] = score(y, trial.predict(x, batch_size=batch_size, verbose=0))
        if scores[threshold] <= baseline + tolerance:
            chosen = threshold
        else:
            break  # larger thresholds prune a superset and only get worse
    return chosen, scores
