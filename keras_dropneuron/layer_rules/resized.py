"""The shared rule of layers whose output channels are new units (Dense, Conv)."""

from typing import TYPE_CHECKING

import numpy as np

from keras_dropneuron.layer_rules.base import (
    Constants,
    Fold,
    Indices,
    Layer,
    LayerRule,
    Tensors,
    Weights,
)
from keras_dropneuron.layer_rules.helpers import (
    activate,
    bias_or_zeros,
    channels_first,
    has_bias,
    mixes_channels,
)
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class ResizedRule(LayerRule):
    """A layer that reads input channels and makes new output channels.

    It is where units are cut. An input channel it does not read (all its
    outgoing weights within the threshold) can go; so can a constant input
    channel whose value folds into the bias exactly. An output unit whose
    incoming weights are all zero is the constant `activation(bias)`.

    Subclasses say where the output axis of `kernel_attribute` is and how to
    test, fold, slice and count.
    """

    consumes = True
    kernel_attribute = "kernel"
    output_axis = -1

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if channels_first(layer):
            return "channels_first: the surgeon follows channels on the last axis"
        return None

    def outgoing_zero(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per input channel: are all weights that read it within `threshold`?"""
        raise NotImplementedError

    def fold_is_exact(self, layer: Layer) -> bool:
        """Whether a constant input channel folds into the bias exactly."""
        return True

    def takes_bias(self, layer: Layer) -> bool:
        """Whether the re-created layer can hold a bias to fold constants into.

        A layer without a bias needs a `use_bias` argument to get one.
        """
        return has_bias(layer) or "use_bias" in layer.get_config()

    def fold_bias(self, layer: Layer, constants: np.ndarray) -> np.ndarray:
        """Bias change when input channels with `constants` are removed."""
        raise NotImplementedError

    def output_constants(
        self, layer: Layer, threshold: float, constants: list[np.ndarray], approximate: bool
    ) -> np.ndarray:
        """Per output channel: the constant value it always takes, else NaN."""
        kernel = numpy(getattr(layer, self.kernel_attribute))
        flat = np.moveaxis(np.abs(kernel), self.output_axis, 0)
        dead = np.all(flat.reshape(flat.shape[0], -1) <= threshold, axis=1)
        bias = bias_or_zeros(layer, kernel.shape[self.output_axis])
        return np.where(dead, activate(layer, bias), np.nan)

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        layer, key = call.layer, call.inputs[0]
        read = ~self.outgoing_zero(layer, analysis.threshold)
        analysis.read(key, read)
        shared = analysis.is_shared(call)
        exact = self.fold_is_exact(layer) and not shared
        known = ~np.isnan(constants[0])
        if self.takes_bias(layer):
            folds = exact | (analysis.approximate and not shared)
        else:  # a constant of 0 needs no bias; any other stays read
            exact, folds = True, False
        foldable = known & (folds | (constants[0] == 0))
        analysis.keep(key, read & ~foldable)
        if analysis.approximate and not exact:
            analysis.inexact_consumers.add(index)
        if mixes_channels(layer):
            # softmax and friends mix the outputs: they all stay.
            analysis.keep(call.outputs[0])
            return None
        return self.output_constants(layer, analysis.threshold, constants, analysis.approximate)

    def sliced_bias(
        self, layer: Layer, width: int, kept_out: Indices, fold: Fold, weights: Weights
    ) -> Weights:
        """Adds the (folded) bias to `weights` when the new layer needs one."""
        bias = bias_or_zeros(layer, width)
        if fold is not None:
            bias = bias + self.fold_bias(layer, fold)
        if has_bias(layer) or fold is not None and np.any(bias != 0):
            weights["bias"] = bias[kept_out]
        return weights
