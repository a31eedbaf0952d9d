"""Bidirectional around LSTM, GRU or SimpleRNN: each direction loses its dead units.

The wrapper holds two recurrent layers, `forward_layer` and `backward_layer`,
both reading the same sequence; the dead-unit logic is the recurrent rule's
(`recurrent.RecurrentRule`): a unit goes when its candidate path is zero (its
output and states are 0 at every step), or when nothing reads it (no gate of
its own layer reads it back and no consumer reads its output).

- `merge_mode="concat"`: output channel `j < F` is forward unit `j`, channel
  `F + j` backward unit `j` (`F` units per direction). Each direction is cut on
  its own, with that offset, but both keep as many units: Keras gives the
  wrapper the output shape of twice the forward layer's, so the side that
  loses fewer keeps some of its dead units (always exact).
- `"sum"`, `"ave"`, `"mul"`: output channel `j` combines forward unit `j` and
  backward unit `j`, so both go or both stay. The channel is the constant 0
  only when both units are dead (for `mul` one dead side would do only if the
  other were known to be finite; that is not claimed).
- `None`: two outputs; unit `j` goes from both directions or from neither.
- `return_state`: each direction's states are its units, forward states first.
- An input feature goes when neither direction's kernel reads it (or it is the
  constant 0).

Penalties and pruning (`layer_weights`): the kernels of both directions,
`forward_layer.cell.kernel`, `forward_layer.cell.recurrent_kernel`,
`backward_layer.cell.kernel`, `backward_layer.cell.recurrent_kernel`, each
with its direction's gates; `regularize_model` puts the regularizers into the
wrapped layers' configs (`"layer"` and `"backward_layer"`). For the reports
the wrapper's units are the forward units followed by the backward units
(`forward.units + backward.units`, whatever the merge mode), and the units
`slim_model` keeps are those of both directions (`side_units`).

Kept whole (with the reason): a wrapped layer other than Keras's LSTM, GRU or
SimpleRNN, or one that overrides `call()`; stateful layers; initial states
given to the call; directions of different widths.
"""

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import (
    Constants,
    Cut,
    Layer,
    LayerRule,
    Pairs,
    Tensor,
    Tensors,
    Weights,
)
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.recurrent import RecurrentRule
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis, Plan

_RECURRENT = RecurrentRule()
_SIDES = ("forward_layer", "backward_layer")
# Where each direction's config sits in the wrapper's config.
_CONFIG_KEYS = {"forward_layer": "layer", "backward_layer": "backward_layer"}


def _keras_call(obj):
    module = getattr(type(obj).call, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def _state_count(rnn):
    return len(rnn.cell.state_size) if isinstance(rnn.cell.state_size, list | tuple) else 1


class BidirectionalRule(LayerRule):
    """`Bidirectional(LSTM | GRU | SimpleRNN)`: both directions' dead units go.

    `width_argument` is the `units` of the wrapped layers (set in both
    sub-configs); `round_to` rounds those units (for `"concat"`, each
    direction's half of the output channels).
    """

    types = (layers.Bidirectional,)
    state = tuple(f"{side}.{path}" for side in _SIDES for path in _RECURRENT.state)
    width_argument = "units"
    wraps = True

    def layer_weights(self, layer: Layer) -> tuple[WeightLayout, ...]:
        """Both directions' recurrent layouts, under `forward_layer.` and `backward_layer.`.

        A wrapped layer without a recurrent rule gives none (the wrapper is
        then not supported).
        """
        found = []
        for side in _SIDES:
            rnn = getattr(layer, side, None)
            if not isinstance(rnn, _RECURRENT.types):
                return ()
            found += [
                dataclasses.replace(
                    layout,
                    attribute=f"{side}.{layout.attribute}",
                    regularizer_argument=f"{_CONFIG_KEYS[side]}.config."
                    f"{layout.regularizer_argument}",
                )
                for layout in _RECURRENT.weights_of(type(rnn))
            ]
        return tuple(found)

    def unit_biases(self, layer: Layer) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple(
            (f"{side}.{bias}", tuple(f"{side}.{path}" for path in paths))
            for side in _SIDES
            if isinstance(getattr(layer, side, None), _RECURRENT.types)
            for bias, paths in _RECURRENT.unit_biases(getattr(layer, side))
        )

    def _side_pairs(self, pairs):
        """`pairs` of the wrapper split per direction, with the wrapped layer's paths."""
        for side in _SIDES:
            prefix = f"{side}."
            yield [
                (dataclasses.replace(layout, attribute=layout.attribute[len(prefix) :]), value)
                for layout, value in pairs
                if layout.attribute.startswith(prefix)
            ]

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        # Inputs: read by either direction; units: forward's, then backward's.
        inputs, units = [], []
        for side, side_pairs in zip(_SIDES, self._side_pairs(pairs), strict=True):
            alive = _RECURRENT.alive_sides(getattr(layer, side), side_pairs, threshold)
            inputs.append(alive[0])
            units.append(alive[1])
        return np.logical_or.reduce(inputs), np.concatenate(units)

    def read_inside(self, layer: Layer, pairs: Pairs) -> np.ndarray | None:
        inside = [
            _RECURRENT.read_inside(getattr(layer, side), side_pairs)
            for side, side_pairs in zip(_SIDES, self._side_pairs(pairs), strict=True)
        ]
        return np.concatenate(inside)

    def units_read(self, layer: Layer, reads: list[np.ndarray | None]) -> np.ndarray | None:
        # concat: the output's channels are the units; otherwise channel j (or
        # output 0 / 1 without merging) is read for forward and backward unit j.
        if layer.merge_mode == "concat":
            return reads[0]
        sides = (reads[0], reads[1]) if layer.merge_mode is None else (reads[0], reads[0])
        return None if any(r is None for r in sides) else np.concatenate(sides)

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        for side in _SIDES:
            rnn = getattr(layer, side)
            if not isinstance(rnn, _RECURRENT.types):
                return f"Bidirectional around {type(rnn).__name__}: no rule for the wrapped layer"
            if not (_keras_call(rnn) and _keras_call(rnn.cell)):
                return f"Bidirectional around {type(rnn).__name__}, which overrides call()"
            reason = _RECURRENT.barrier_reason(rnn, in_tensors, out_tensors)
            if reason:
                return reason
        if layer.forward_layer.units != layer.backward_layer.units:
            return (
                "Bidirectional with directions of different widths "
                f"({layer.forward_layer.units} and {layer.backward_layer.units} units)"
            )
        return None

    def _units(self, layer, threshold):
        """Per direction: (dead units, units that must stay whoever reads them)."""
        sides = []
        for side in _SIDES:
            rnn = getattr(layer, side)
            dead = _RECURRENT.incoming_dead(rnn, threshold)
            recurrent = np.abs(numpy(rnn.cell.recurrent_kernel))
            fed_back = ~np.all(recurrent <= threshold, axis=1)
            sides.append((dead, fed_back & ~dead))
        return sides

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        layer, threshold = call.layer, analysis.threshold
        read = np.zeros(layer.forward_layer.cell.kernel.shape[0], dtype=bool)
        for side in _SIDES:
            kernel = np.abs(numpy(getattr(layer, side).cell.kernel))
            read |= ~np.all(kernel <= threshold, axis=1)
        analysis.read(call.inputs[0], read)
        analysis.keep(call.inputs[0], read & ~(constants[0] == 0))
        for key in call.inputs[1:]:  # the mask
            analysis.keep(key)
            analysis.read(key)
        (dead_f, stay_f), (dead_b, stay_b) = self._units(layer, threshold)
        zero_f, zero_b = np.where(dead_f, 0.0, np.nan), np.where(dead_b, 0.0, np.nan)
        outputs = call.outputs
        width_f = layer.forward_layer.units
        if layer.merge_mode == "concat":
            analysis.keep(outputs[0], np.concatenate([stay_f, stay_b]))
            merged = [np.concatenate([zero_f, zero_b])]
            slots = analysis.slots(outputs[0])
            side_slots = slots[:width_f], slots[width_f:]
        elif layer.merge_mode is None:
            analysis.join(analysis.slots(outputs[0]), analysis.slots(outputs[1]))
            analysis.keep(outputs[0], stay_f)
            analysis.keep(outputs[1], stay_b)
            merged = [zero_f, zero_b]
            side_slots = analysis.slots(outputs[0]), analysis.slots(outputs[1])
        else:  # sum, ave, mul: channel j is forward unit j with backward unit j
            analysis.keep(outputs[0], stay_f | stay_b)
            merged = [np.where(dead_f & dead_b, 0.0, np.nan)]
            side_slots = (analysis.slots(outputs[0]),) * 2
        # return_state: forward states, then backward states; a dead unit's are 0.
        states = outputs[len(merged) :]
        count_f = _state_count(layer.forward_layer)
        values = list(merged)
        for i, key in enumerate(states):
            forward = i < count_f
            analysis.join(side_slots[0 if forward else 1], analysis.slots(key))
            values.append(zero_f if forward else zero_b)
        return values

    def must_keep(self, layer: Layer, gone: np.ndarray) -> np.ndarray | tuple:
        if layer.merge_mode != "concat":
            return ()  # one set of channels for both directions
        # Both directions keep as many units (and so at least one each).
        width = layer.forward_layer.units
        gone_f, gone_b = np.flatnonzero(gone[:width]), np.flatnonzero(gone[width:]) + width
        surplus = len(gone_f) - len(gone_b)
        return gone_f[:surplus] if surplus > 0 else gone_b[:-surplus]

    def width_parts(self, layer: Layer, width: int) -> list[np.ndarray]:
        if layer.merge_mode != "concat":
            return [np.arange(width)]
        return [np.arange(width // 2), np.arange(width // 2, width)]  # units per direction

    def side_units(self, layer: Layer, kept_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kept units of each direction, from the kept merged channels."""
        kept_out = np.asarray(kept_out, dtype=int)
        if layer.merge_mode != "concat":
            return kept_out, kept_out
        width = layer.forward_layer.units
        return kept_out[kept_out < width], kept_out[kept_out >= width] - width

    def units_kept(self, layer: Layer, plan: "Plan", index: int) -> int:
        # The units are both directions' (whatever the merge mode).
        kept = plan.kept[plan.graph.calls[index].outputs[0]]
        return int(sum(len(units) for units in self.side_units(layer, kept)))

    def describe_groups(self, cls: type) -> tuple[str, str]:
        groups = "each direction's, as the wrapped layer's (`forward_layer.cell.kernel`, ...)"
        return groups, groups

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        weights = {}
        for side, units in zip(_SIDES, self.side_units(layer, cut.kept_out), strict=True):
            sub = config.get(_CONFIG_KEYS[side])
            inner = {}
            if sub is not None:
                # A sub-config may carry the input shape it was built with.
                sub.pop("build_config", None)
                inner = sub["config"]
            sliced = _RECURRENT.resize(getattr(layer, side), inner, Cut(cut.kept_in, units))
            weights.update({f"{side}.{path}": value for path, value in sliced.items()})
        return weights

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        return sum(_RECURRENT.macs(getattr(layer, side), tensor_in, None) for side in _SIDES)
