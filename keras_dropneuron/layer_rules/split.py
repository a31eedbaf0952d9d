"""`keras.ops.split` along the channel axis: the inverse of `Concatenate`."""

from typing import TYPE_CHECKING

import numpy as np
from keras.src.ops import numpy as _numpy

from keras_dropneuron.layer_rules.base import Constants, Layer, LayerRule, Tensors, channels

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class SplitRule(LayerRule):
    """Channel `c` of output `j` is input channel `offset_j + c`.

    The slim graph splits at the kept widths: a new split operation with
    explicit indices (an even split into sections may become uneven).
    """

    types = (_numpy.Split,)
    table_title = "`keras.ops.split` along the last axis"

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if len(in_tensors) != 1:
            return "split of several tensors"
        if layer.axis not in (-1, len(in_tensors[0].shape) - 1):
            return f"splits axis {layer.axis}, not the channels on the last axis"
        return None

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        source = analysis.slots(call.inputs[0])
        widths = [channels(analysis.tensor(key)) for key in call.outputs]
        analysis.join(source, np.concatenate([analysis.slots(key) for key in call.outputs]))
        return np.split(constants[0], np.cumsum(widths)[:-1])

    def rebuild_operation(self, operation: object, kept: list[np.ndarray]) -> object:
        """A split at the kept widths of the outputs."""
        indices = [int(i) for i in np.cumsum([len(k) for k in kept])[:-1]]
        return _numpy.Split(indices, axis=operation.axis)

    def describe_surgery(self) -> str:
        return "channels at each output's offset"
