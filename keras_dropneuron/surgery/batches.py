"""The batches `slim_model` verifies and times on.

Random inputs matching a model (ids below every embedding's vocabulary), a
user's batch checked against the model's inputs, and the slim model's inputs
(without dropped input channels), in the structure each model takes.
"""

from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops, tree

from keras_dropneuron import keras_internals, layer_rules

VERIFY_BATCH_SIZE = 8

if TYPE_CHECKING:  # plan imports nothing from here: for annotations only
    from keras_dropneuron.surgery.plan import Plan


def is_float(dtype: str) -> bool:
    """Whether `dtype` (a name; bfloat16 included) is a floating-point type."""
    if dtype == "bfloat16":
        return True
    try:
        return np.issubdtype(np.dtype(dtype), np.floating)
    except TypeError:
        return False


def random_inputs(
    model: keras.Model,
    batch_size: int = VERIFY_BATCH_SIZE,
    seed: int = 0,
    positive: bool = False,
) -> list[np.ndarray]:
    """Random inputs matching `model.inputs` (unknown dims become 8).

    Float inputs are standard normal, or uniform in [0, 1) when `positive`;
    boolean inputs (masks) are True with probability 0.75.
    Integer inputs draw ids below the smallest limit the model's layer rules
    give (`LayerRule.input_id_limit`: an Embedding's `input_dim`; 2 when no
    layer gives one), so every id is valid.

    Raises:
        ValueError: If an input is neither a float nor an integer tensor.
    """
    rng = np.random.default_rng(seed)
    limits = (
        layer_rules.rule_for(layer).input_id_limit(layer)
        for layer in keras_internals.sublayers(model)
    )
    vocab = min((limit for limit in limits if limit is not None), default=2)
    data = []
    for tensor in model.inputs:
        # A fixed batch size (a stateful RNN) must be kept.
        shape = (tensor.shape[0] or batch_size,) + tuple(d or 8 for d in tensor.shape[1:])
        dtype = str(tensor.dtype)
        if "int" in dtype:
            values = rng.integers(0, vocab, shape)
        elif dtype == "bool":  # masks
            values = rng.random(shape) < 0.75
        elif is_float(dtype):
            values = rng.random(shape) if positive else rng.standard_normal(shape)
        else:
            raise ValueError(
                "Cannot verify the slim model on random data: input "
                f"{tensor.name!r} has dtype {dtype}. Pass `verify_inputs=` (a "
                "batch the model accepts) or `verify=False`."
            )
        data.append(values.astype(dtype))
    return data


def input_list(
    model: keras.Model, verify_inputs: np.ndarray | list | tuple | dict
) -> list[np.ndarray]:
    """`verify_inputs` as a list of arrays in `model.inputs` order.

    Raises:
        TypeError: If it is not an array, a list/tuple or a dict of arrays.
        ValueError: If it does not match the model's inputs.
    """
    names = [keras_internals.input_name(t) for t in model.inputs]
    if isinstance(verify_inputs, dict):
        missing = sorted(set(names) - set(verify_inputs))
        if missing:
            raise ValueError(
                "Invalid value for argument `verify_inputs`: expected a dict with "
                f"the model's input names {names}. Received: keys "
                f"{sorted(verify_inputs)}"
            )
        values = [verify_inputs[name] for name in names]
    elif isinstance(verify_inputs, list | tuple):
        values = list(verify_inputs)
    elif hasattr(verify_inputs, "shape"):
        values = [verify_inputs]
    else:
        raise TypeError(
            "Invalid type for argument `verify_inputs`: expected an array, a "
            "list of arrays or a dict of arrays. Received: "
            f"verify_inputs of type {type(verify_inputs).__name__}"
        )
    if len(values) != len(names):
        raise ValueError(
            f"Invalid value for argument `verify_inputs`: expected {len(names)} "
            f"arrays, one per model input {names}. Received: {len(values)} arrays"
        )
    values = [np.asarray(ops.convert_to_numpy(v)) for v in values]
    for value, tensor in zip(values, model.inputs, strict=True):
        expected = tuple(tensor.shape[1:])
        ok = value.ndim == len(expected) + 1 and all(
            d is None or d == s for d, s in zip(expected, value.shape[1:], strict=True)
        )
        finite = not is_float(str(value.dtype)) or np.all(np.isfinite(value))
        if not finite:
            raise ValueError(
                "Invalid value for argument `verify_inputs`: expected finite values. "
                f"Received: NaN or infinite values for input {tensor.name!r}"
            )
        if not ok or value.shape[0] == 0:
            raise ValueError(
                "Invalid value for argument `verify_inputs`: expected a batch of "
                f"shape (batch, {', '.join(str(d) for d in expected)}) for input "
                f"{tensor.name!r}. Received: shape {value.shape}"
            )
    return values


def packed(model: keras.Model, data: list[np.ndarray]) -> object:
    """`data` (one array per model input) in the structure `model` takes."""
    functional = keras_internals.functional_of(model)
    return tree.pack_sequence_as(keras_internals.inputs_struct(functional), data)


def slice_inputs(plan: "Plan", data: list[np.ndarray]) -> list[np.ndarray]:
    """The inputs of the slim model: `data` without the dropped input channels."""
    if not plan.kept_inputs:
        return data
    return [
        x[..., plan.kept[key]] if plan.graph.tensors[key].shape[-1] else x
        for x, key in zip(data, plan.graph.inputs, strict=True)
    ]
