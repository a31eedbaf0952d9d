"""Flatten (channels last): output channel `p * C + c` is input channel `c`."""

from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import Constants, Layer, LayerRule, Tensors
from keras_dropneuron.layer_rules.helpers import channels_first

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class FlattenRule(LayerRule):
    """The Dense rows `p * C + c` of every position `p` belong to channel `c`."""

    types = (layers.Flatten,)

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if channels_first(layer):
            return "channels_first: the surgeon follows channels on the last axis"
        if any(d is None for d in in_tensors[0].shape[1:]):
            return "input shape not fully known"
        return None

    def describe_surgery(self) -> str:
        return "channel `c` is rows `p * C + c` of the next kernel"

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        width = len(constants[0])
        out = analysis.slots(call.outputs[0])
        analysis.join(out, analysis.slots(call.inputs[0])[np.arange(len(out)) % width])
        return np.tile(constants[0], len(out) // width)
