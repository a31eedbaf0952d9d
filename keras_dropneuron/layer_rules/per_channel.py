"""Layers that map channel `c` in to channel `c` out: BN, PReLU, pass-through."""

from typing import TYPE_CHECKING

import numpy as np
from keras import layers, ops

from keras_dropneuron.layer_rules.base import (
    Constants,
    Cut,
    Fold,
    Indices,
    Layer,
    LayerRule,
    Tensors,
    Weights,
    channels,
)
from keras_dropneuron.layer_rules.helpers import channels_first, mixes_channels
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class PerChannelRule(LayerRule):
    """Channel `c` in is channel `c` out: both are kept or removed together."""

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if channels_first(layer):
            return "channels_first: the surgeon follows channels on the last axis"
        if len({channels(t) for t in in_tensors + out_tensors}) != 1:
            return "input and output widths differ"
        return None

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        """The constant each channel takes after the layer (NaN if unknown)."""
        return x

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.join(analysis.slots(call.inputs[0]), analysis.slots(call.outputs[0]))
        return self.constants(call.layer, constants[0])

    def describe_surgery(self) -> str:
        return "sliced with the channels" if self.state else "channels pass through"

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        return {
            name: numpy(getattr(layer, name))[..., kept_out]
            for name in self.state
            if getattr(layer, name, None) is not None
        }


class BatchNormalizationRule(PerChannelRule):
    """Per-channel statistics and affine weights, sliced with the channels."""

    types = (layers.BatchNormalization,)
    state = ("gamma", "beta", "moving_mean", "moving_variance")
    training_sensitive = True  # batch statistics

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        rank = len(in_tensors[0].shape)
        if axis not in (-1, rank - 1, (-1,), (rank - 1,)):
            return f"normalizes axis {layer.axis}, not the channels on the last axis"
        return super().barrier_reason(layer, in_tensors, out_tensors)

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        mean = numpy(layer.moving_mean)
        variance = numpy(layer.moving_variance)
        gamma = numpy(layer.gamma) if layer.scale else 1.0
        beta = numpy(layer.beta) if layer.center else 0.0
        return gamma * (x - mean) / np.sqrt(variance + layer.epsilon) + beta


class PReLURule(PerChannelRule):
    """A learned slope per channel (or one shared slope)."""

    types = (layers.PReLU,)
    state = ("alpha",)

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        # Negative values meet a per-position slope unless shared: not folded.
        return np.where(x >= 0, x, np.nan)

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        alpha = numpy(layer.alpha)
        return {"alpha": alpha[..., kept_out] if alpha.shape[-1] > 1 else alpha}


class ActivationRule(PerChannelRule):
    """An elementwise activation: the constant it outputs is `f(constant)`."""

    types = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU)

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if mixes_channels(layer):
            return "activation mixes channels (softmax and the like)"
        return super().barrier_reason(layer, in_tensors, out_tensors)

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        known = np.nan_to_num(x)
        out = np.asarray(ops.convert_to_numpy(layer(known[None].astype("float32"))))
        return np.where(np.isnan(x), np.nan, out[0])


class ZeroPaddingRule(PerChannelRule):
    """Pads with zeros: only a constant 0 stays constant."""

    types = (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)

    def constants(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        return np.where(x == 0, x, np.nan)


class PassThroughRule(PerChannelRule):
    """Pooling, dropout, cropping, upsampling: each channel on its own."""

    training_sensitive = True  # the dropout and noise layers

    types = (
        layers.Dropout,
        layers.SpatialDropout1D,
        layers.SpatialDropout2D,
        layers.SpatialDropout3D,
        layers.GaussianNoise,
        layers.GaussianDropout,
        layers.AlphaDropout,
        layers.ActivityRegularization,
        layers.Identity,
        layers.MaxPooling1D,
        layers.MaxPooling2D,
        layers.MaxPooling3D,
        layers.AveragePooling1D,
        layers.AveragePooling2D,
        layers.AveragePooling3D,
        layers.GlobalMaxPooling1D,
        layers.GlobalMaxPooling2D,
        layers.GlobalMaxPooling3D,
        layers.GlobalAveragePooling1D,
        layers.GlobalAveragePooling2D,
        layers.GlobalAveragePooling3D,
        layers.UpSampling1D,
        layers.UpSampling2D,
        layers.UpSampling3D,
        layers.Cropping1D,
        layers.Cropping2D,
        layers.Cropping3D,
    )


class ReshapeRule(PerChannelRule):
    """A `Reshape` whose input and output end in the same channel axis.

    Row-major order puts value `(position, c)` at flat index `position * C +
    c`; when both shapes end in `C`, it lands in channel `c` again, whatever
    happens to the positions (`(h, w, C) -> (h * w, C)`, `(C,) -> (1, 1, C)`).
    Removing channels lowers the last entry of `target_shape`.
    """

    types = (layers.Reshape,)

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        target = list(config["target_shape"])
        if target[-1] != -1:  # an inferred last axis follows by itself
            target[-1] = len(cut.kept_out)
        config["target_shape"] = tuple(target)
        return {}

    def describe_surgery(self) -> str:
        return "channels pass through when both shapes end in the same channel axis"
