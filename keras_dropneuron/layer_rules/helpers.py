"""Helpers for writing layer rules: biases, activations, kernel positions, data formats."""

import math

import keras
import numpy as np
from keras import ops

from keras_dropneuron.weight_values import numpy


def has_bias(layer: keras.layers.Layer) -> bool:
    """Whether `layer` adds a bias: its `use_bias`, else whether it holds a `bias`."""
    return bool(getattr(layer, "use_bias", getattr(layer, "bias", None) is not None))


def activate(layer: keras.layers.Layer, values: np.ndarray) -> np.ndarray:
    """Applies `layer.activation` (if any) to a 1-D numpy array."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return values
    return np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(values))))


def bias_or_zeros(layer: keras.layers.Layer, size: int) -> np.ndarray:
    """The bias of `layer`, or zeros of length `size` when it has none."""
    bias = numpy(getattr(layer, "bias", None)) if has_bias(layer) else None
    return np.zeros(size, dtype=np.float64) if bias is None else bias


def spatial_axes(kernel: np.ndarray) -> tuple[int, ...]:
    """The kernel axes that index positions, not channels."""
    return tuple(range(kernel.ndim - 2))


def spatial_size(shape: tuple[int | None, ...]) -> int:
    """Number of positions of a channels-last tensor shape (batch excluded)."""
    return math.prod(d or 1 for d in shape[1:-1])


# Activations that mix channels; a layer using one cannot lose output channels.
_CHANNEL_MIXING = {"softmax", "log_softmax", "glu", "sparsemax"}


def elementwise_activation(fn: object) -> bool:
    """Whether `fn` is a Keras activation applied to each value on its own."""
    name = getattr(fn, "__name__", "")
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("keras") and name not in _CHANNEL_MIXING


def mixes_channels(layer: keras.layers.Layer) -> bool:
    """Whether `layer.activation` may mix channels (softmax, a user function)."""
    fn = getattr(layer, "activation", None)
    return fn is not None and not elementwise_activation(fn)


def channels_first(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is configured with its channels on axis 1."""
    if getattr(layer, "data_format", None) == "channels_first":
        return True
    axis = getattr(layer, "axis", None)
    return axis == 1 or axis == [1] or axis == (1,)
