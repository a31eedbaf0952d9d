"""Checks of the `(x, y)` arrays that `prune_to_budget` trains and validates on."""

import keras
import numpy as np

from keras_dropneuron import checks


def check_single_input_output(model: keras.Model) -> None:
    """Refuses a model with several inputs or outputs: the pipeline trains on one array pair.

    Args:
        model: The model to prune.

    Raises:
        ValueError: If `model` has more than one input or output.
    """
    inputs, outputs = len(model.inputs), len(model.outputs)
    if inputs == 1 and outputs == 1:
        return
    names = ", ".join(repr(tensor.name) for tensor in [*model.inputs, *model.outputs])
    raise ValueError(
        "Invalid value for argument `model`: prune_to_budget expects a model with one "
        "input and one output (it trains, validates and scores on one (x, y) pair of "
        f"arrays). Received: model {model.name!r} with {inputs} inputs and {outputs} "
        f"outputs ({names}). Prune it with `regularize_model`, `BudgetCallback` in your own "
        "`fit` and `slim_model`."
    )


def check_pair(name: str, data: object, model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` as numpy arrays, checked against each other and the model's input.

    Args:
        name: The argument's name, for the messages.
        data: What the user passed: a tuple `(x, y)` of arrays.
        model: The model that will take `x`.

    Returns:
        `(x, y)` as numpy arrays.

    Raises:
        TypeError: If `data` is not a pair of arrays.
        ValueError: If `x` and `y` hold different numbers of samples, hold
            NaN or infinite values, or `x` does not fit the model's input.
    """
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data)
    try:
        x, y = (np.asarray(a) for a in data)
    except (TypeError, ValueError) as error:
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data) from error
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected x and y with one entry per "
            f"sample. Received: x of shape {x.shape} and y of shape {y.shape}"
        )
    for label, array in (("x", x), ("y", y)):
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            raise ValueError(
                f"Invalid value for argument `{name}`: expected finite values. "
                f"Received: {label} with NaN or infinite entries"
            )
    expected = input_mismatch(model, x)
    if expected:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected x of shape {expected} for the "
            f"model's input. Received: x of shape {x.shape}"
        )
    return x, y


def input_mismatch(model: keras.Model, x: np.ndarray) -> str | None:
    """The input shape a single-input `model` expects, as text, when `x` does not fit it.

    Args:
        model: The model.
        x: The samples, one per row.

    Returns:
        `None` when `x` fits (or the model has several inputs), else the
        expected shape, e.g. `"(n, 28, 28, 1)"`.
    """
    if len(model.inputs) != 1:
        return None
    expected = tuple(model.inputs[0].shape[1:])
    fits = len(expected) == x.ndim - 1 and all(
        e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
    )
    return None if fits else "(" + ", ".join(["n", *map(str, expected)]) + ")"
