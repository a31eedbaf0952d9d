"""Checks of the `(x, y)` arrays that `prune_to_budget` trains and validates on."""

import keras
import numpy as np

from keras_dropneuron import checks


def check_single_output(model: keras.Model) -> None:
    """Refuses a model with several outputs: the pipeline scores one output.

    Args:
        model: The model to prune.

    Raises:
        ValueError: If `model` has more than one output.
    """
    outputs = len(model.outputs)
    if outputs == 1:
        return
    names = ", ".join(repr(name) for name in model.output_names)
    raise ValueError(
        "Invalid value for argument `model`: prune_to_budget expects a model with one "
        "output (it validates and scores one output against y). Received: model "
        f"{model.name!r} with {outputs} outputs ({names}). Prune it with "
        "`regularize_model`, `BudgetCallback` in your own `fit` and `slim_model`."
    )


def _inputs(name, x, model):
    """`x` as one numpy array per model input: `{input name: array}`, or one array."""
    names = [tensor.name for tensor in model.inputs]
    if len(names) == 1:
        return {names[0]: np.asarray(x)} if not isinstance(x, dict) else x
    if isinstance(x, dict):
        if sorted(x) != sorted(names):
            raise ValueError(
                f"Invalid value for argument `{name}`: expected x as a dict with one array "
                f"per model input {names}. Received: x with keys {sorted(x)}"
            )
        return {key: np.asarray(x[key]) for key in names}
    if isinstance(x, list | tuple) and len(x) == len(names):
        return {key: np.asarray(value) for key, value in zip(names, x, strict=True)}
    raise ValueError(
        f"Invalid value for argument `{name}`: the model has {len(names)} inputs {names}, so "
        "x must be a dict of arrays keyed by input name (or a list in that order). "
        f"Received: x of type {type(x).__name__}"
    )


def check_pair(name: str, data: object, model: keras.Model) -> tuple[object, np.ndarray]:
    """`(x, y)` as numpy arrays, checked against each other and the model's inputs.

    Args:
        name: The argument's name, for the messages.
        data: What the user passed: a tuple `(x, y)`, `x` an array, or for a
            model with several inputs a dict of arrays keyed by input name
            (or a list in input order).
        model: The model that will take `x`.

    Returns:
        `(x, y)`: `x` an array (one input) or a dict of arrays, `y` an array.

    Raises:
        TypeError: If `data` is not a pair of arrays.
        ValueError: If `x` and `y` hold different numbers of samples, hold
            NaN or infinite values, or `x` does not fit the model's inputs.
    """
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data)
    try:
        inputs = _inputs(name, data[0], model)
        y = np.asarray(data[1])
    except (TypeError, ValueError) as error:
        if isinstance(error, ValueError) and "Invalid value" in str(error):
            raise
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data) from error
    for input_name, x in inputs.items():
        label = "x" if len(inputs) == 1 else f"x[{input_name!r}]"
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                f"Invalid value for argument `{name}`: expected x and y with one entry per "
                f"sample. Received: {label} of shape {x.shape} and y of shape {y.shape}"
            )
        if x.dtype.kind in "fc" and not np.all(np.isfinite(x)):
            raise ValueError(
                f"Invalid value for argument `{name}`: expected finite values. "
                f"Received: {label} with NaN or infinite entries"
            )
        expected = input_mismatch(model, x, input_name)
        if expected:
            raise ValueError(
                f"Invalid value for argument `{name}`: expected {label} of shape {expected} "
                f"for the model's input. Received: {label} of shape {x.shape}"
            )
    if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected finite values. "
            "Received: y with NaN or infinite entries"
        )
    x = next(iter(inputs.values())) if len(inputs) == 1 else inputs
    return x, y


def input_mismatch(model: keras.Model, x: np.ndarray, name: str | None = None) -> str | None:
    """The shape a model input expects, as text, when `x` does not fit it.

    Args:
        model: The model.
        x: The samples, one per row.
        name: The input's name. Defaults to `None`: the model's only input.

    Returns:
        `None` when `x` fits, else the expected shape, e.g. `"(n, 28, 28, 1)"`.
    """
    tensors = [t for t in model.inputs if name is None or t.name == name]
    if len(tensors) != 1:
        return None
    expected = tuple(tensors[0].shape[1:])
    fits = len(expected) == x.ndim - 1 and all(
        e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
    )
    return None if fits else "(" + ", ".join(["n", *map(str, expected)]) + ")"
