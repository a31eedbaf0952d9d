"""The base of every layer rule, and the helpers the rules share.

A rule is everything keras-dropneuron knows about one layer family, in one
place: which weights it regularizes and prunes (with the axes of their input
and output units), how channels pass through the layer in the surgeon's
analysis, how its weights are sliced when channels go, whether a constant
input channel folds into it exactly, its multiply-adds, and the constructor
argument that sets its width. `keras_dropneuron.layer_rules.rule_for(layer)`
finds the rule of a layer; a layer without one is a `Barrier`.
"""

import dataclasses
import math

import numpy as np
from keras import ops

from keras_dropneuron.weight_values import numpy


@dataclasses.dataclass(frozen=True)
class Cut:
    """What the analysis removes from one layer.

    Attributes:
        kept_in: Kept input channel indices (of the first input).
        kept_out: Kept output channel indices (of the first output).
        fold: Per input channel, the constant folded into the bias (0 where
            nothing is folded), or `None`.
        inner: Kept indices of units inside the layer that are not channels
            (attention heads), or `None`.
    """

    kept_in: object
    kept_out: object
    fold: object = None
    inner: object = None


@dataclasses.dataclass(frozen=True)
class WeightLayout:
    """Where the unit axes of one weight tensor are.

    Attributes:
        attribute: Path of the layer attribute that holds the weight
            (`"kernel"`, `"cell.kernel"`; read it with `attribute()`).
        regularizer_argument: Constructor argument that regularizes it, or
            its path in the layer's config for a wrapped layer's weight
            (`"layer.config.kernel_regularizer"`: a `Bidirectional`'s forward
            layer).
        input_axes: Axes that index the layer's input units (channels).
        output_axes: Axes that index the layer's output units (filters).
        gates: Number of gate blocks on the last axis (`gates * units`
            columns, unit `j` owning column `b * units + j` of every block
            `b`): 4 for LSTM kernels, 3 for GRU, else 1. Groups are taken on
            the `gate_view` of the weight.
        guard: Whether pruning must refuse to kill every output group of this
            weight at once (the layer would compute a constant). `False` where
            the layer works on without them (a recurrent kernel, attention
            queries and keys).
    """

    attribute: str
    regularizer_argument: str
    input_axes: tuple[int, ...]
    output_axes: tuple[int, ...]
    gates: int = 1
    guard: bool = True


def gate_view(shape, axes, gates=1):
    """A weight's shape with its last axis as `(gates, units)`, and `axes` on that view.

    Hidden unit `j` of a recurrent kernel `(..., gates * units)` is column
    `b * units + j` of every gate block `b`: on the view `(..., gates, units)`
    it is index `j` of the last axis. Axes keep their meaning on the weight
    (`-1` is the units, `-2` the rows); the gate axis is never a unit axis.

    Args:
        shape: The weight's shape.
        axes: Unit axes of the weight (negative allowed, in range).
        gates: Number of gate blocks. Defaults to `1` (the shape unchanged).

    Returns:
        `(view_shape, unit_axes, reduce_axes)`: the shape to reshape the weight
        to, the unit axes on it (non-negative) and the other axes, which a
        group's norm sums over.
    """
    rank = len(shape)
    axes = tuple(a % rank for a in axes)
    if gates > 1:
        shape = (*shape[:-1], gates, shape[-1] // gates)
        axes = tuple(rank if a == rank - 1 else a for a in axes)
        rank += 1
    return tuple(shape), axes, tuple(a for a in range(rank) if a not in axes)


def group_alive(weight, unit_axes, gates=1):
    """Boolean array over the units of `unit_axes`: True where the group has a non-zero."""
    view, _, reduce_axes = gate_view(weight.shape, unit_axes, gates)
    return np.any(np.reshape(weight, view) != 0, axis=reduce_axes)


def attribute(obj, path):
    """`obj.a.b` for the path `"a.b"` (`None` where an attribute is missing)."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
    return obj


def activate(layer, values):
    """Applies `layer.activation` (if any) to a 1-D numpy array."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return values
    return np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(values))))


def bias_or_zeros(layer, size):
    """The bias of `layer`, or zeros of length `size` when it has none."""
    bias = numpy(getattr(layer, "bias", None)) if layer.use_bias else None
    return np.zeros(size, dtype=np.float64) if bias is None else bias


def spatial_axes(kernel):
    """The kernel axes that index positions, not channels."""
    return tuple(range(kernel.ndim - 2))


def spatial_size(shape):
    """Number of positions of a channels-last tensor shape (batch excluded)."""
    return math.prod(d or 1 for d in shape[1:-1])


def channels(tensor):
    """Size of the last (channel) axis of a KerasTensor, or 0 if unknown."""
    shape = tensor.shape
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


# Activations that mix channels; a layer using one cannot lose output channels.
_CHANNEL_MIXING = {"softmax", "log_softmax", "glu", "sparsemax"}


def elementwise_activation(fn):
    """Whether `fn` is a Keras activation applied to each value on its own."""
    name = getattr(fn, "__name__", "")
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("keras") and name not in _CHANNEL_MIXING


def mixes_channels(layer):
    """Whether `layer.activation` may mix channels (softmax, a user function)."""
    fn = getattr(layer, "activation", None)
    return fn is not None and not elementwise_activation(fn)


def channels_first(layer):
    """Whether `layer` is configured with its channels on axis 1."""
    if getattr(layer, "data_format", None) == "channels_first":
        return True
    axis = getattr(layer, "axis", None)
    return axis == 1 or axis == [1] or axis == (1,)


class LayerRule:
    """What the library knows about one layer family (the default: nothing).

    Subclasses set the class attributes and override the methods their
    family needs. The surgeon's analysis calls `barrier_reason` and then
    `analyze` once per call of a layer; `slice` and `macs` serve the rebuild
    and the reports.

    Attributes:
        types: The Keras layer classes the rule covers (subclasses included).
        weights: The weights DropNeuron regularizes and prunes, with their
            unit axes.
        state: Every weight attribute the rule knows how to slice. A layer
            holding any other weight (a quantization scale, a LoRA factor, a
            subclass's extra variable) is kept whole.
        width_argument: The constructor argument that sets the number of
            output channels, for rules that remove them.
        consumes: Whether the layer reads input channels through weights that
            can ignore them, so a dead input channel can be cut (or folded).
        training_sensitive: Whether the layer computes differently in training
            mode (batch statistics, random masks); such a call is kept whole
            when it may run in training mode.
        wraps: Whether the layer's weights are those of the layers it wraps,
            so that only `layer_weights(layer)` knows them (`weights_of` of
            the class gives none).
    """

    types: tuple[type, ...] = ()
    weights: tuple[WeightLayout, ...] = ()
    state: tuple[str, ...] = ()
    width_argument: str | None = None
    consumes = False
    training_sensitive = False
    wraps = False

    def barrier_reason(self, layer, in_tensors, out_tensors):
        """Why this call must keep all its channels, or `None`."""
        return "layer type without a rule"

    def analyze(self, analysis, index, call, constants):
        """Adds the call's channel coupling to `analysis`.

        Args:
            analysis: The surgeon's `plan.Analysis`.
            index: Index of the call in the graph.
            call: The `graph.Call`.
            constants: Per input tensor, the constant each channel always
                takes (NaN where not constant).

        Returns:
            The constants of the call's first output (`None` if unknown), or a
            list with the constants of each output.
        """
        raise NotImplementedError

    def must_keep(self, layer, gone):
        """Output channels to keep beyond the dead ones the analysis keeps.

        Args:
            layer: The layer.
            gone: Per output channel, whether the analysis removes it.

        Returns:
            Indices of removed output channels that must stay after all (a
            grouped convolution keeps its groups equal). Keeping a dead
            channel is always exact.
        """
        return ()

    def width_parts(self, layer, width):
        """The parts of the output channels that `round_to` rounds one by one.

        Args:
            layer: The layer.
            width: Its number of output channels.

        Returns:
            A list of index arrays; by default one, all channels (a
            Bidirectional layer with `merge_mode="concat"`: one per direction).
        """
        return [np.arange(width)]

    def resize(self, layer, config, cut):
        """Adapts `config` to a `Cut` and returns the new weights.

        Args:
            layer: The source layer.
            config: Its config, changed in place (width, `use_bias`).
            cut: The `Cut`.

        Returns:
            Weight attribute path (`"kernel"`, `"query_dense.kernel"`) -> value.
        """
        weights = self.slice(layer, cut.kept_in, cut.kept_out, cut.fold)
        if self.width_argument:
            config[self.width_argument] = len(cut.kept_out)
        if "bias" in weights and "use_bias" in config:
            config["use_bias"] = True
        return weights

    def slice(self, layer, kept_in, kept_out, fold):
        """Attribute name -> new value when channels are cut.

        Args:
            layer: The source layer.
            kept_in: Kept input channel indices.
            kept_out: Kept output channel indices.
            fold: Per input channel, the constant folded into the bias (0
                where nothing is folded), or `None`.
        """
        return {}

    def macs(self, layer, tensor_in, tensor_out):
        """Multiply-adds of one call (0 for layers without a kernel)."""
        return 0

    def weights_of(self, cls):
        """The `weights` of layers of class `cls` (a family's own, where they differ)."""
        return self.weights

    def layer_weights(self, layer):
        """The `weights` of `layer` itself (a wrapper's: those of what it wraps)."""
        return self.weights_of(type(layer))

    def units_read(self, layer, reads):
        """For the reports: per unit of `layer`, whether a consumer reads it.

        Args:
            layer: The layer.
            reads: Per output tensor of one call, the surgeon's boolean array
                of the channels some consumer reads (`None` where unknown).

        Returns:
            A boolean array over the units of `alive_sides`, or `None` where
            unknown (then every unit counts as read). By default the first
            output's channels are the units.
        """
        return reads[0]

    def alive_sides(self, layer, pairs, threshold):
        """For the reports: which input units and which units of `layer` are alive.

        Args:
            layer: The layer.
            pairs: `(layout, value)` of its weights in `weights` order, the
                values with every `|w| <= threshold` already set to 0.
            threshold: The threshold, for weights outside `weights` (biases).

        Returns:
            Two boolean arrays: input units with an outgoing weight (the first
            weight's input groups) and units with an incoming weight (the last
            weight's output groups).
        """
        (first, first_value), (last, last_value) = pairs[0], pairs[-1]
        return (
            group_alive(first_value, first.input_axes, first.gates),
            group_alive(last_value, last.output_axes, last.gates),
        )

    def read_inside(self, layer, pairs):
        """For the reports: which units the layer reads back itself, or `None`.

        A recurrent layer's gates read every unit whose recurrent-kernel row
        is not zero; such a unit is read whatever its consumers do.
        """
        return None


class Barrier(LayerRule):
    """A layer whose channel semantics are not known: all channels are kept."""

    def __init__(self, reason="layer type without a rule"):
        self.reason = reason

    def barrier_reason(self, layer, in_tensors, out_tensors):
        return self.reason

    def analyze(self, analysis, index, call, constants):
        for key in call.inputs + call.outputs:
            analysis.keep(key)
        for key in call.inputs:
            analysis.read(key)
        return None
