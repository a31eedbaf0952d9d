"""Numpy values of Keras variables, each read once within `cached_values()`.

`slim_model`, `sparsity_report` and the budget read every weight of a model
several times (the NaN check, the analysis, the slicing, the copies); inside
`cached_values()` each variable is converted to numpy once and shared.
"""

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
from keras import ops

_cache: dict[int, tuple[keras.Variable, np.ndarray]] | None = None


@contextlib.contextmanager
def cached_values() -> Iterator[None]:
    """Within it, `numpy(variable)` reads each variable once; the values are read-only.

    Contexts nest: an inner one starts an empty cache and gives the outer one
    back when it ends.

    Example:

    >>> with cached_values():
    ...     kernel = numpy(layer.kernel)  # later reads share this array
    """
    global _cache
    outer, _cache = _cache, {}
    try:
        yield
    finally:
        _cache = outer


def numpy(variable: keras.Variable | None) -> np.ndarray | None:
    """The value of `variable` as a numpy array (`None` stays `None`).

    Args:
        variable: A Keras variable (or tensor), or `None`.

    Returns:
        A numpy array; inside `cached_values()` a shared, read-only one.
    """
    if variable is None:
        return None
    if _cache is None:
        return np.asarray(ops.convert_to_numpy(variable))
    key = id(variable)
    if key not in _cache:
        value = np.asarray(ops.convert_to_numpy(variable))
        value.flags.writeable = False
        _cache[key] = (variable, value)  # the variable keeps its id alive
    return _cache[key][1]
