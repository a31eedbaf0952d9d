"""Dense: units are removed."""

import math

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import Fold, Indices, Layer, Tensor, Weights, channels
from keras_dropneuron.layer_rules.helpers import spatial_size
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.resized import ResizedRule
from keras_dropneuron.weight_values import numpy

DENSE_LIKE = WeightLayout("kernel", "kernel_regularizer", (-2,), (-1,))


class DenseRule(ResizedRule):
    """`kernel (in, out)`: unit `j` is column `j`, input `i` is row `i`."""

    types = (layers.Dense,)
    weights = (DENSE_LIKE,)
    state = ("kernel", "bias")
    width_argument = "units"

    def outgoing_zero(self, layer: Layer, threshold: float) -> np.ndarray:
        return np.all(np.abs(numpy(layer.kernel)) <= threshold, axis=1)

    def fold_bias(self, layer: Layer, constants: np.ndarray) -> np.ndarray:
        return constants @ numpy(layer.kernel)

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        kernel = numpy(layer.kernel)
        weights = {"kernel": kernel[np.ix_(kept_in, kept_out)]}
        return self.sliced_bias(layer, kernel.shape[-1], kept_out, fold, weights)

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        return spatial_size(tensor_out.shape) * math.prod(
            (channels(tensor_in), channels(tensor_out))
        )
