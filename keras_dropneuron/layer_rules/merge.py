"""Merges (one shared channel set) and Concatenate (channels at offsets)."""

from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import Constants, Layer, LayerRule, Tensors, channels

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class MergeRule(LayerRule):
    """Every input and the output share one channel set."""

    types = (
        layers.Add,
        layers.Subtract,
        layers.Multiply,
        layers.Average,
        layers.Maximum,
        layers.Minimum,
    )
    _COMBINE = {
        layers.Add: lambda x: x.sum(0),
        layers.Subtract: lambda x: x[0] - x[1],
        layers.Multiply: lambda x: x.prod(0),
        layers.Average: lambda x: x.mean(0),
        layers.Maximum: lambda x: x.max(0),
        layers.Minimum: lambda x: x.min(0),
    }

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if len({channels(t) for t in in_tensors + out_tensors}) != 1:
            return "inputs of different widths (broadcasting)"
        return None

    def describe_surgery(self) -> str:
        return "one channel set shared by every input"

    def combine(self, layer: Layer, stacked: np.ndarray) -> np.ndarray:
        """The constants of the output from the stacked input constants."""
        for cls, combine in self._COMBINE.items():
            if isinstance(layer, cls):
                return combine(stacked)
        return np.where(np.all(stacked == stacked[:1], axis=0), stacked[0], np.nan)

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        out = analysis.slots(call.outputs[0])
        for key in call.inputs:
            analysis.join(analysis.slots(key), out)
        return self.combine(call.layer, np.stack(constants))  # NaN (unknown) propagates


class ConcatenateRule(MergeRule):
    """Output channel `offset_i + c` is channel `c` of input `i`.

    Along another axis it is a merge: all inputs share the channels.
    """

    types = (layers.Concatenate,)

    def describe_surgery(self) -> str:
        return "channels at each input's offset"

    def _on_channels(self, layer, rank):
        return layer.axis in (-1, rank - 1)

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if self._on_channels(layer, len(in_tensors[0].shape)):
            return None
        return super().barrier_reason(layer, in_tensors, out_tensors)

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        if not self._on_channels(call.layer, len(analysis.tensor(call.inputs[0]).shape)):
            return super().analyze(analysis, index, call, constants)
        analysis.join(
            np.concatenate([analysis.slots(key) for key in call.inputs]),
            analysis.slots(call.outputs[0]),
        )
        return np.concatenate(constants)
