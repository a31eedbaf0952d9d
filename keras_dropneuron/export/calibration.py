"""Calibration samples for full-integer TFLite quantization, checked against the model's inputs.

TFLite's converter takes a `representative_dataset`: a callable yielding one
sample at a time. `representative_dataset` builds one from arrays, after
checking that they fit the model's inputs, so a mistake is reported before the
(slow) conversion starts.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_dropneuron import checks

# What `representative_dataset` (and the `representative_data` arguments) take.
RepresentativeData = (
    np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray] | Callable[[], Iterable[Any]]
)


def _input_names(model):
    return [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(model.inputs)]


def _one_array_per_input(names, data):
    """`data` as a list in the order of `names`: from a dict, a list, or one array."""
    if isinstance(data, dict):
        if set(data) != set(names):
            raise ValueError(
                "Invalid value for argument `representative_data`: expected a dict keyed by "
                f"the model's input names {names}. Received keys {sorted(data)}"
            )
        return [data[name] for name in names]
    if isinstance(data, list | tuple) and len(names) > 1:
        if len(data) != len(names):
            raise ValueError(
                "Invalid value for argument `representative_data`: expected one array per "
                f"model input ({len(names)}: {names}). Received {len(data)} arrays"
            )
        return list(data)
    if len(names) > 1:
        raise checks.invalid_type(
            "representative_data",
            f"a list or dict of {len(names)} arrays (one per input {names}) or a callable",
            data,
        )
    return [data]


def _numeric_array(array, data):
    """`array` as a numeric numpy array; `data` is the whole argument, for the message."""
    try:
        array = np.asarray(array)
    except (TypeError, ValueError):
        raise checks.invalid_type(
            "representative_data", "an array, a list or dict of arrays, or a callable", data
        ) from None
    if array.dtype.kind not in "biuf":
        raise checks.invalid_type(
            "representative_data",
            "numeric arrays (or a callable)",
            f"<array of dtype {array.dtype}>",
        )
    return array


def _check_samples(name, tensor, array):
    """Checks that `array` holds at least one finite sample of the input `tensor`'s shape."""
    expected = tuple(tensor.shape[1:])
    shape_ok = array.ndim == len(expected) + 1 and all(
        want is None or want == got for want, got in zip(expected, array.shape[1:], strict=True)
    )
    if not shape_ok:
        raise ValueError(
            f"Invalid value for argument `representative_data`: input {name!r} expects "
            f"samples of shape (n, {', '.join(str(d) for d in expected)}). Received an "
            f"array of shape {array.shape}"
        )
    if len(array) == 0:
        raise ValueError(
            "Invalid value for argument `representative_data`: expected at least one "
            f"sample. Received an empty array for input {name!r}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(
            "Invalid value for argument `representative_data`: the samples for input "
            f"{name!r} contain NaN or infinite values, which calibration cannot use"
        )


def _calibration_arrays(model: keras.Model, data: RepresentativeData) -> tuple[list, list]:
    """The calibration samples as one array per model input, checked and cast.

    Args:
        model: The model to be converted.
        data: An array `(n, *input_shape)` for a one-input model, or a list
            (in input order) or dict (by input name) of such arrays.

    Returns:
        `(names, arrays)`: the input names, and for each input its samples in
        the input's dtype (float32 where it has none).

    Raises:
        TypeError: If `data` is not numeric arrays in one of those forms.
        ValueError: If the arrays do not match the inputs' names or shapes,
            are empty, hold NaN or infinite values, or differ in length.
    """
    names = _input_names(model)
    checked = []
    for name, tensor, array in zip(
        names, model.inputs, _one_array_per_input(names, data), strict=True
    ):
        array = _numeric_array(array, data)
        _check_samples(name, tensor, array)
        checked.append(array.astype(tensor.dtype or "float32"))
    counts = {len(a) for a in checked}
    if len(counts) > 1:
        raise ValueError(
            "Invalid value for argument `representative_data`: every input needs the same "
            f"number of samples. Received {[len(a) for a in checked]}"
        )
    return names, checked


def representative_dataset(
    model: keras.Model, data: RepresentativeData
) -> Callable[[], Iterable[Any]]:
    """A TFLite `representative_dataset` callable for `model` from `data`.

    Args:
        model: The model to be converted.
        data: Calibration samples: an array `(n, *input_shape)` for a one-input
            model; a list (in input order) or a dict (by input name) of such
            arrays for several inputs; or a callable returning an iterable of
            samples, in TFLite's convention (passed on unchanged).

    Returns:
        A callable yielding `{input name: one sample with a batch axis of 1}`.

    Raises:
        TypeError: If `data` is none of the above.
        ValueError: If the arrays do not match the model's inputs, are empty,
            or hold NaN or infinite values.

    Example:

    >>> samples = representative_dataset(slim, x_train[:200])
    >>> next(iter(samples()))["x"].shape
    (1, 28, 28, 1)
    """
    if callable(data):
        return data
    names, arrays = _calibration_arrays(model, data)

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(arrays[0])):
            yield {name: array[i : i + 1] for name, array in zip(names, arrays, strict=True)}

    return samples
