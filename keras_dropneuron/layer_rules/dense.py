"""Dense: units are removed."""

import math

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import channels
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

    def outgoing_zero(self, layer, threshold):
        return np.all(np.abs(numpy(layer.kernel)) <= threshold, axis=1)

    def fold_bias(self, layer, constants):
        return constants @ numpy(layer.kernel)

    def slice(self, layer, kept_in, kept_out, fold):
        kernel = numpy(layer.kernel)
        weights = {"kernel": kernel[np.ix_(kept_in, kept_out)]}
        return self.sliced_bias(layer, kernel.shape[-1], kept_out, fold, weights)

    def macs(self, layer, tensor_in, tensor_out):
        return spatial_size(tensor_out.shape) * math.prod(
            (channels(tensor_in), channels(tensor_out))
        )
