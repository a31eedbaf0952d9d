"""LSTM, GRU and SimpleRNN: dead hidden units and unread input features go.

Hidden unit `j` owns column `b * units + j` of every gate block `b` of
`kernel (in, g * units)`, `recurrent_kernel (units, g * units)` and the bias
(Keras 3 gate order: LSTM i, f, c, o; GRU z, r, h; SimpleRNN one block).

- Incoming dead: the candidate block's columns of both kernels and its bias
  are zero (GRU with `reset_after`: both bias rows), and the activation maps 0
  to 0. From the zero initial state the unit's cell and output then stay 0 at
  every step (LSTM: `c = f * c + i * act(0) = 0`, `h = o * act(0) = 0`; GRU:
  `h = z * h + (1 - z) * act(0) = 0`), whatever its other gates do.
- Otherwise a unit can go only when nothing reads it: no consumer, and its
  row of the recurrent kernel (what every gate reads of it) is zero.
- An input feature goes when its kernel row is zero (or it is the constant 0).

Weights for the penalties and pruning: `cell.kernel` (`kernel_regularizer`)
and `cell.recurrent_kernel` (`recurrent_regularizer`), rows the input side,
unit `j`'s columns of every gate block the output side (`gates` = 4, 3, 1).
"""

from typing import TYPE_CHECKING

import numpy as np
from keras import layers, ops

from keras_dropneuron.layer_rules.base import (
    Constants,
    Cut,
    Layer,
    LayerRule,
    Pairs,
    Tensor,
    Tensors,
    Weights,
    channels,
)
from keras_dropneuron.layer_rules.layout import WeightLayout, group_alive
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis

_CANDIDATE_BLOCK = {layers.LSTM: 2, layers.GRU: 2, layers.SimpleRNN: 0}
_GATES = {layers.LSTM: 4, layers.GRU: 3, layers.SimpleRNN: 1}
_LAYOUTS = {
    cls: (
        WeightLayout("cell.kernel", "kernel_regularizer", (-2,), (-1,), gates),
        # A layer with no recurrent columns left still reads its input: no guard.
        WeightLayout("cell.recurrent_kernel", "recurrent_regularizer", (-2,), (-1,), gates, False),
    )
    for cls, gates in _GATES.items()
}


def _family(layer):
    return next(cls for cls in _GATES if isinstance(layer, cls))


class RecurrentRule(LayerRule):
    """One rule for Keras's three recurrent layers."""

    types = tuple(_GATES)
    state = ("cell.kernel", "cell.recurrent_kernel", "cell.bias")
    width_argument = "units"
    consumes = True

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if layer.stateful:
            return "stateful: the state carries over between calls"
        # Besides the sequence a call may take its mask (boolean) or initial states.
        if any(str(t.dtype) != "bool" for t in in_tensors[1:]):
            return "called with an initial state"
        return None

    def weights_of(self, cls: type) -> tuple[WeightLayout, ...]:
        return next((_LAYOUTS[family] for family in _GATES if issubclass(cls, family)), ())

    def unit_biases(self, layer: Layer) -> tuple[tuple[str, tuple[str, ...]], ...]:
        # A unit without kernel columns is removable only once its bias is 0 too.
        if not layer.cell.use_bias:
            return ()
        return (("cell.bias", ("cell.kernel", "cell.recurrent_kernel")),)

    def describe_groups(self, cls: type) -> tuple[str, str]:
        # One row for the three layers: their groups differ only in the number of gates.
        return super().describe_groups(self.types[0])

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        # A unit has an incoming weight in either kernel's columns.
        inputs, _ = super().alive_sides(layer, pairs, threshold)
        units = [group_alive(value, layout.output_axes, layout.gates) for layout, value in pairs]
        return inputs, np.logical_or.reduce(units)

    def read_inside(self, layer: Layer, pairs: Pairs) -> np.ndarray | None:
        recurrent = [
            (lay, value) for lay, value in pairs if lay.attribute.endswith("recurrent_kernel")
        ]
        return next((group_alive(value, (-2,)) for _, value in recurrent), None)

    def _blocks(self, layer, value):
        """`value (..., g * units)` as `(..., g, units)`."""
        return value.reshape(*value.shape[:-1], _GATES[_family(layer)], -1)

    def incoming_dead(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per unit: is its output exactly 0 at every step?"""
        cell = layer.cell
        block = _CANDIDATE_BLOCK[_family(layer)]
        kernel = self._blocks(layer, np.abs(numpy(cell.kernel)))[:, block]
        recurrent = self._blocks(layer, np.abs(numpy(cell.recurrent_kernel)))[:, block]
        dead = np.all(kernel <= threshold, axis=0) & np.all(recurrent <= threshold, axis=0)
        if cell.use_bias:
            bias = self._blocks(layer, np.abs(numpy(cell.bias)))
            dead &= np.all(bias[..., block, :].reshape(-1, bias.shape[-1]) == 0, axis=0)
        zero = float(ops.convert_to_numpy(cell.activation(ops.zeros(()))))
        return dead & (zero == 0.0)

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        layer = call.layer
        cell, threshold = layer.cell, analysis.threshold
        read = ~np.all(np.abs(numpy(cell.kernel)) <= threshold, axis=1)
        analysis.read(call.inputs[0], read)
        analysis.keep(call.inputs[0], read & ~(constants[0] == 0))
        for key in call.inputs[1:]:  # the mask
            analysis.keep(key)
            analysis.read(key)
        dead = self.incoming_dead(layer, threshold)
        # A live unit that the gates read back must stay, read by a consumer or not.
        fed_back = ~np.all(np.abs(numpy(cell.recurrent_kernel)) <= threshold, axis=1)
        analysis.keep(call.outputs[0], fed_back & ~dead)
        for key in call.outputs[1:]:  # return_state: the states are the same units
            analysis.join(analysis.slots(call.outputs[0]), analysis.slots(key))
        # A dead unit's output, hidden state and cell state are all 0.
        return [np.where(dead, 0.0, np.nan)] * len(call.outputs)

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        kept_in, units = cut.kept_in, cut.kept_out
        width = layer.units
        columns = (np.arange(_GATES[_family(layer)])[:, None] * width + units).reshape(-1)
        cell = layer.cell
        weights = {
            "cell.kernel": numpy(cell.kernel)[kept_in][:, columns],
            "cell.recurrent_kernel": numpy(cell.recurrent_kernel)[units][:, columns],
        }
        if cell.use_bias:
            weights["cell.bias"] = numpy(cell.bias)[..., columns]
        config["units"] = len(units)
        return weights

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        steps = tensor_in.shape[1] or 1
        gates = _GATES[_family(layer)] * layer.units
        return steps * (channels(tensor_in) + layer.units) * gates
