"""Element-wise operations applied in the graph (`keras.ops.gelu(x)`): channels pass.

A Functional model that calls `keras.ops.gelu`, `keras.activations.relu` or
`ops.tanh` on a tensor holds an operation, not a layer. Each of these maps
every value on its own, so channel `c` in is channel `c` out, and a constant
channel stays constant (its value through the operation). Operations that mix
channels (`sparsemax`, `softmax`) are not listed and stay barriers; those
with a second operand (`x + y`, `x * 2.0`) are `binary_ops`'.
"""

import numpy as np
from keras import ops
from keras.src.activations import activations as _activations
from keras.src.ops import nn as _nn
from keras.src.ops import numpy as _numpy

from keras_dropneuron.layer_rules.base import Layer, Tensors
from keras_dropneuron.layer_rules.per_channel import PerChannelRule

_NN = (
    "Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu", "LogSigmoid", "LeakyRelu",
    "HardSigmoid", "HardSilu", "Elu", "Selu", "Gelu", "Celu", "SoftShrink", "HardShrink",
    "SparsePlus", "Squareplus", "TanhShrink", "HardTanh", "Threshold",
)  # fmt: skip
_NUMPY = (
    "Absolute", "Abs", "Negative", "Square", "Sqrt", "Exp", "Tanh", "Sin", "Cos", "Sign",
    "Reciprocal", "Log1p", "Expm1", "Floor", "Ceil", "Round", "Clip", "Log",
)  # fmt: skip
_ACTIVATIONS = ("ReLU", "Mish")


def _plain(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str | np.generic)


def _arguments(operation: object) -> list:
    """The values the operation was made with (`x_min`, `negative_slope`)."""
    return [value for name, value in vars(operation).items() if not name.startswith("_")]


def _classes(module, names):
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


class ElementwiseOpRule(PerChannelRule):
    """A unary element-wise operation: the constant it outputs is `op(constant)`."""

    types = _classes(_nn, _NN) + _classes(_numpy, _NUMPY) + _classes(_activations, _ACTIVATIONS)

    table_title = (
        "element-wise operations called in the graph (`ops.gelu`, `ops.tanh`, "
        "`activations.relu`, `ops.exp`, ...)"
    )

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if len(in_tensors) != 1 or len(out_tensors) != 1:
            return "operation on several tensors"
        if tuple(in_tensors[0].shape[1:]) != tuple(out_tensors[0].shape[1:]):
            return "operation changes the shape"
        if not all(_plain(value) for value in _arguments(layer)):
            # `ops.clip(x, per_channel_minimum, 1.0)` keeps an array sized for the old width.
            return "operation holds an array argument"
        return super().barrier_reason(layer, in_tensors, out_tensors)

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        known = np.nan_to_num(x)[None].astype("float32")
        out = np.asarray(ops.convert_to_numpy(layer(ops.convert_to_tensor(known))))
        # An infinite result (`exp` of a large constant) is not folded into a bias.
        return np.where(np.isnan(x) | ~np.isfinite(out[0]), np.nan, out[0])

    def describe_surgery(self) -> str:
        return "channels pass through"
