"""DepthwiseConv and SeparableConv: channels carry their multiplier blocks."""

import math
from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import (
    Constants,
    Fold,
    Indices,
    Layer,
    LayerRule,
    Tensor,
    Tensors,
    Weights,
    channels,
)
from keras_dropneuron.layer_rules.conv import is_one_by_one
from keras_dropneuron.layer_rules.helpers import (
    activate,
    bias_or_zeros,
    channels_first,
    mixes_channels,
    spatial_axes,
    spatial_size,
)
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.resized import ResizedRule
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis

# Output channel `c * multiplier + m` belongs to input channel `c`: its
# incoming group is `kernel[..., c, m]`, the outgoing group of `c` is
# `kernel[..., c, :]`.
DEPTHWISE = WeightLayout("kernel", "depthwise_regularizer", (-2,), (-2, -1))


class DepthwiseRule(LayerRule):
    """`kernel (*k, in, mult)`: channel `c` in makes outputs `c * mult + m`."""

    types = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
    weights = (DEPTHWISE,)
    state = ("kernel", "bias")

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if channels_first(layer):
            return "channels_first: the surgeon follows channels on the last axis"
        return None

    def describe_surgery(self) -> str:
        return "input channel `c` and its `depth_multiplier` outputs go together"

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        layer = call.layer
        kernel = numpy(layer.kernel)
        width, multiplier = kernel.shape[-2:]
        reads = ~np.all(np.abs(kernel).reshape(-1, width * multiplier) <= analysis.threshold, 0)
        analysis.read(call.inputs[0], reads.reshape(width, multiplier).any(axis=1))
        out_slots = analysis.slots(call.outputs[0])
        analysis.join(
            out_slots, analysis.slots(call.inputs[0])[np.arange(len(out_slots)) // multiplier]
        )
        bias = bias_or_zeros(layer, width * multiplier).reshape(width, multiplier)
        dead = reads.reshape(width, multiplier) == 0
        taps = kernel.sum(axis=spatial_axes(kernel))
        inputs = constants[0][:, None]
        exact = analysis.approximate or layer.padding == "valid" or is_one_by_one(layer)
        foldable = ~np.isnan(inputs) & (exact | (inputs == 0))
        value = np.where(dead, bias, np.where(foldable, inputs * taps + bias, np.nan))
        if mixes_channels(layer):
            analysis.keep(call.outputs[0])  # softmax and friends mix the outputs
            return None
        return activate(layer, value.reshape(-1))

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        kernel = numpy(layer.kernel)
        weights = {"kernel": kernel[..., kept_in, :]}
        if layer.use_bias:
            weights["bias"] = numpy(layer.bias).reshape(kernel.shape[-2], -1)[kept_in].ravel()
        return weights

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        taps = math.prod(layer.kernel_size)
        return spatial_size(tensor_out.shape) * taps * channels(tensor_out)


class SeparableRule(ResizedRule):
    """A depthwise then a pointwise kernel: input channels and filters go."""

    types = (layers.SeparableConv1D, layers.SeparableConv2D)
    weights = (
        WeightLayout("depthwise_kernel", "depthwise_regularizer", (-2,), (-2, -1)),
        WeightLayout("pointwise_kernel", "pointwise_regularizer", (-2,), (-1,)),
    )
    state = ("depthwise_kernel", "pointwise_kernel", "bias")
    width_argument = "filters"
    kernel_attribute = "pointwise_kernel"

    def outgoing_zero(self, layer: Layer, threshold: float) -> np.ndarray:
        depthwise = np.abs(numpy(layer.depthwise_kernel))
        width, multiplier = depthwise.shape[-2:]
        pointwise = np.abs(numpy(layer.pointwise_kernel)).reshape(width, multiplier, -1)
        dead_depthwise = np.all(
            np.moveaxis(depthwise, -2, 0).reshape(width, -1) <= threshold, axis=1
        )
        dead_pointwise = np.all(pointwise.reshape(width, -1) <= threshold, axis=1)
        return dead_depthwise | dead_pointwise

    def fold_is_exact(self, layer: Layer) -> bool:
        return layer.padding == "valid" or is_one_by_one(layer)

    def fold_bias(self, layer: Layer, constants: np.ndarray) -> np.ndarray:
        depthwise = numpy(layer.depthwise_kernel)
        per_tap = depthwise.sum(axis=spatial_axes(depthwise)) * constants[:, None]
        pointwise = numpy(layer.pointwise_kernel)
        return per_tap.reshape(-1) @ pointwise.reshape(-1, pointwise.shape[-1])

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        depthwise = numpy(layer.depthwise_kernel)
        multiplier = depthwise.shape[-1]
        rows = (kept_in[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        pointwise = numpy(layer.pointwise_kernel)
        weights = {
            "depthwise_kernel": depthwise[..., kept_in, :],
            "pointwise_kernel": pointwise[..., rows, :][..., kept_out],
        }
        return self.sliced_bias(layer, pointwise.shape[-1], kept_out, fold, weights)

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        middle = channels(tensor_in) * layer.depth_multiplier
        taps = math.prod(layer.kernel_size)
        return spatial_size(tensor_out.shape) * middle * (taps + channels(tensor_out))
