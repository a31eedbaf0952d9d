"""Conv1D/2D/3D and their transposes: filters are removed."""

import math
from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import (
    Constants,
    Fold,
    Indices,
    Layer,
    Tensor,
    Weights,
    channels,
)
from keras_dropneuron.layer_rules.dense import DENSE_LIKE
from keras_dropneuron.layer_rules.helpers import spatial_axes, spatial_size
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.resized import ResizedRule
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis

TRANSPOSED = WeightLayout("kernel", "kernel_regularizer", (-1,), (-2,))


def is_one_by_one(layer: Layer) -> bool:
    """Whether every kernel dimension of `layer` is 1 (padding is a no-op)."""
    return all(k == 1 for k in layer.kernel_size)


def _all_zero_along(kernel, axis, threshold):
    flat = np.moveaxis(np.abs(kernel), axis, 0)
    return np.all(flat.reshape(flat.shape[0], -1) <= threshold, axis=1)


class ConvRule(ResizedRule):
    """`kernel (*k, in, out)`: filter `j` is `kernel[..., j]`."""

    types = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
    weights = (DENSE_LIKE,)
    state = ("kernel", "bias")
    width_argument = "filters"
    input_axis = -2
    # Multiply-adds happen once per output position (per input one when transposed).
    positions_of = "output"

    def outgoing_zero(self, layer: Layer, threshold: float) -> np.ndarray:
        return _all_zero_along(numpy(layer.kernel), self.input_axis, threshold)

    def fold_is_exact(self, layer: Layer) -> bool:
        # A padded convolution sees zeros, not the constant, near the border.
        return layer.padding == "valid" or is_one_by_one(layer)

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        groups = getattr(call.layer, "groups", 1)
        if groups == 1:
            return super().analyze(analysis, index, call, constants)
        # Grouped: input channel `i` feeds kernel row `i % (C / g)` of its own
        # group's filters only. Every group shares the kernel's input axis, so
        # input channels stay; filters go, as many from every group.
        kernel = np.abs(numpy(call.layer.kernel))
        per_group = kernel.reshape(*kernel.shape[:-1], groups, -1)
        read = np.any(per_group > analysis.threshold, axis=(*range(kernel.ndim - 2), -1))
        analysis.read(call.inputs[0], read.T.reshape(-1))
        analysis.keep(call.inputs[0])
        return self.output_constants(call.layer, analysis.threshold, constants, False)

    def must_keep(self, layer: Layer, gone: np.ndarray) -> np.ndarray | tuple:
        groups = getattr(layer, "groups", 1)
        if groups == 1:
            return ()
        per_group = gone.reshape(groups, -1)
        kept = (~per_group).sum(axis=1)
        extra = [
            group * per_group.shape[1] + np.flatnonzero(per_group[group])[: kept.max() - count]
            for group, count in enumerate(kept)
        ]
        return np.concatenate(extra)

    def fold_bias(self, layer: Layer, constants: np.ndarray) -> np.ndarray:
        kernel = numpy(layer.kernel)
        return constants @ kernel.sum(axis=spatial_axes(kernel))

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        kernel = numpy(layer.kernel)
        sliced = kernel
        if getattr(layer, "groups", 1) == 1:  # a grouped one keeps its inputs
            sliced = np.take(kernel, kept_in, self.input_axis)
        sliced = np.take(sliced, kept_out, self.output_axis)
        width = kernel.shape[self.output_axis]
        return self.sliced_bias(layer, width, kept_out, fold, {"kernel": sliced})

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        taps = math.prod(layer.kernel_size)
        positions = (tensor_out if self.positions_of == "output" else tensor_in).shape
        per_filter = channels(tensor_in) // getattr(layer, "groups", 1)
        return spatial_size(positions) * taps * per_filter * channels(tensor_out)


class ConvTransposeRule(ConvRule):
    """`kernel (*k, out, in)`: filter `j` is `kernel[..., j, :]`."""

    types = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
    weights = (TRANSPOSED,)
    input_axis = -1
    output_axis = -2
    positions_of = "input"

    def fold_is_exact(self, layer: Layer) -> bool:
        # Each output position sums a different number of taps.
        return False

    def fold_bias(self, layer: Layer, constants: np.ndarray) -> np.ndarray:
        kernel = numpy(layer.kernel)
        return kernel.sum(axis=spatial_axes(kernel)) @ constants
