"""Arithmetic operations called in the graph (`x + y`, `x * 2.0`): channels pass.

`x + y`, `ops.multiply(x, y)` or `x * 2.0` on KerasTensors hold an operation,
not a layer. Each computes `out[..., c]` from `x[..., c]` (and `y[..., c]`)
alone, so:

- on two tensors of the same width, every input and the output share one
  channel set, as with the `Add` layer (positions may broadcast, channels
  may not);
- on one tensor and a Python number, channel `c` in is channel `c` out.

An operand that is a constant array (`x + ops.ones((8,))`) has a value per
channel that the slim graph could not slice: that call keeps its channels.
"""

from typing import TYPE_CHECKING

import numpy as np
from keras import ops, tree
from keras.src.ops import numpy as _numpy

from keras_dropneuron.layer_rules.base import Constants, Layer, LayerRule, Tensors, channels

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis

_NAMES = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power")


class _Operand:
    """Stands in for input tensor `index` while the call's arguments are read."""

    def __init__(self, index: int) -> None:
        self.index = index


def _scalar(value: object) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


class BinaryOpRule(LayerRule):
    """`x + y`, `x * y`, `x * 2.0`, ...: the constant it outputs is `op(constants)`."""

    types = tuple(getattr(_numpy, name) for name in _NAMES if hasattr(_numpy, name))
    table_title = (
        "arithmetic operations called in the graph (`x + y`, `x * 2.0`, `ops.maximum`, ...)"
    )

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if len(in_tensors) > 2 or len(out_tensors) != 1:
            return "operation on more than two tensors"
        if len({channels(t) for t in in_tensors + out_tensors}) != 1:
            return "inputs of different widths (broadcasting the channel axis)"
        return None

    def describe_surgery(self) -> str:
        return "one channel set shared by both tensors, or with a Python number channels pass"

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        stand_ins = {raw: _Operand(i) for i, raw in enumerate(call.raw_inputs)}
        args, kwargs = call.arguments(stand_ins)
        others = [x for x in tree.flatten((args, kwargs)) if not isinstance(x, _Operand)]
        if not all(_scalar(x) for x in others):
            # A constant array operand holds a value per channel: nothing is sliced.
            analysis.keep_whole(call)
            return None
        out = analysis.slots(call.outputs[0])
        for key in call.inputs:
            analysis.join(analysis.slots(key), out)
        return self._constants(call, args, kwargs, constants)

    def _constants(self, call, args, kwargs, constants):
        """The operation on the inputs' constants (NaN where one is unknown)."""
        values = [
            ops.convert_to_tensor(np.nan_to_num(c)[None].astype("float32")) for c in constants
        ]

        def fill(x):
            return values[x.index] if isinstance(x, _Operand) else x

        out = call.layer(*tree.map_structure(fill, args), **tree.map_structure(fill, kwargs))
        out = np.asarray(ops.convert_to_numpy(out), dtype=np.float64)[0]
        unknown = np.any(np.isnan(np.stack(constants)), axis=0) | ~np.isfinite(out)
        return np.where(unknown, np.nan, out)
