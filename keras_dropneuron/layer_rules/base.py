"""The base of every layer rule (`LayerRule`, `Barrier`) and the `Cut` it applies.

A rule is everything keras-dropneuron knows about one layer family, in one
place: which weights it regularizes and prunes (with the axes of their input
and output units) and the regularizers it puts on them, how channels pass
through the layer in the surgeon's analysis, how its weights are sliced when
channels go, whether a constant input channel folds into it exactly, its
multiply-adds, and the constructor argument that sets its width.
`keras_dropneuron.layer_rules.rule_for(layer)` finds the rule of a layer; a
layer without one is a `Barrier`. `attribute` and `channels` read a weight by
its path and a tensor's width, for the rules and the surgeon alike; the
helpers only rules need are in `layer_rules.helpers`.
"""

import dataclasses
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_dropneuron.layer_rules.layout import WeightLayout, describe_groups, group_alive
from keras_dropneuron.regularizers import DropNeuronRegularizer

if TYPE_CHECKING:  # the surgeon imports the rules: these are for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis, Plan


# Type aliases for the signatures of rule methods.
Layer = keras.layers.Layer
Tensor = keras.KerasTensor
Tensors = list[keras.KerasTensor]
Indices = np.ndarray  # kept channel indices, ascending
Fold = np.ndarray | None  # per input channel, the constant folded into the bias
Weights = dict[str, np.ndarray]  # weight attribute path -> value
Pairs = list[tuple[WeightLayout, np.ndarray]]  # `(layout, value)` of a layer's weights
Constants = np.ndarray | list[np.ndarray] | None  # what `LayerRule.analyze` returns


@dataclasses.dataclass(frozen=True)
class Strengths:
    """The penalty strengths `regularize_model` passes to the rules' regularizer hooks.

    Attributes:
        li: Incoming-group strength.
        lo: Outgoing-group strength.
        l1: L1 strength.
        l2: Squared L2 strength.
        heads: Per-head strength (for units that are attention heads).
        scale_by_group_size: Weight groups by `sqrt(group size)`.
    """

    li: float = 0.0
    lo: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    heads: float = 0.0
    scale_by_group_size: bool = False


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

    kept_in: np.ndarray | None
    kept_out: np.ndarray
    fold: np.ndarray | None = None
    inner: np.ndarray | None = None


def attribute(obj: object, path: str) -> object:
    """`obj.a.b` for the path `"a.b"` (`None` where an attribute is missing).

    A part made of digits indexes a list or tuple: `"blocks.0.kernel"` is
    `obj.blocks[0].kernel` (`None` past its end), for a layer that holds its
    sublayers in a list (keras-hub's `ViTEncoder`).
    """
    for name in path.split("."):
        if name.isdigit() and isinstance(obj, (list, tuple)):
            obj = obj[int(name)] if int(name) < len(obj) else None
        else:
            obj = getattr(obj, name, None)
    return obj


def channels(tensor: keras.KerasTensor) -> int:
    """Size of the last (channel) axis of a KerasTensor, or 0 if unknown."""
    shape = tensor.shape
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


class LayerRule:
    """What the library knows about one layer family (the default: nothing).

    Subclasses set the class attributes and override the methods their
    family needs. `regularize_model` asks `regularizers`; pruning,
    `PruneCallback` and `sparsity_report` read `layer_weights`; the surgeon's
    analysis calls `barrier_reason` and then `analyze` once per call of a
    layer; `resize`, `slice` and `macs` serve the rebuild and the reports.
    A rule that only declares `weights` gets penalties, pruning and reports,
    and the surgeon keeps its layers whole (`barrier_reason` says why).

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
        side_inputs_whole: Whether the layer's inputs other than the one shaped
            like its output (masks, caches, an encoder's sequence) are only
            ever kept whole, so their widths need not be known.
        table_title: What the supported-layers table calls the rule's
            classes, where their names would not say it (`None`: the names).

    Example:

    >>> class AffineRule(DenseRule):  # a user layer with `kernel (in, units)`
    ...     types = (Affine,)
    >>> register_rule(Affine, AffineRule)
    """

    types: tuple[type, ...] = ()
    weights: tuple[WeightLayout, ...] = ()
    state: tuple[str, ...] = ()
    width_argument: str | None = None
    consumes: bool = False
    training_sensitive: bool = False
    wraps: bool = False
    side_inputs_whole: bool = False
    table_title: str | None = None

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        """Why this call must keep all its channels, or `None`."""
        return "layer type without a rule"

    def layer_config(self, layer: Layer) -> dict:
        """The config that re-creates `layer` (by default its `get_config()`).

        Rules for classes whose `get_config()` is broken give a correct one.
        """
        return layer.get_config()

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
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

    def must_keep(self, layer: Layer, gone: np.ndarray) -> np.ndarray | tuple:
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

    def resized_class(self, layer: Layer, config: dict) -> type:
        """The class the resized layer is re-created as (by default its own).

        A rule whose resized config needs an argument the class lacks (a head
        size the class derives) gives a subclass that takes it.
        """
        return type(layer)

    def rebuild_operation(self, operation: object, kept: list[np.ndarray]) -> object:
        """For an operation called in the graph: the one the slim graph calls.

        Args:
            operation: The source operation (not a layer: it holds no state).
            kept: Per output, the kept channel indices.

        Returns:
            By default `operation` itself; a rule whose operation's arguments
            depend on the widths (a split) returns a new one.
        """
        return operation

    def round_inner(self, layer: Layer, inner: object, round_to: int) -> object:
        """The units inside the layer to keep (`Cut.inner`) with `round_to` applied.

        By default unchanged. A rule whose inner units can be kept dead
        returns them padded to a multiple of `round_to` (or all of them).
        """
        return inner

    def width_parts(self, layer: Layer, width: int) -> list[np.ndarray]:
        """The parts of the output channels that `round_to` rounds one by one.

        Args:
            layer: The layer.
            width: Its number of output channels.

        Returns:
            A list of index arrays; by default one, all channels (a
            Bidirectional layer with `merge_mode="concat"`: one per direction).
        """
        return [np.arange(width)]

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
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

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        """Attribute name -> new value when channels are cut.

        Args:
            layer: The source layer.
            kept_in: Kept input channel indices.
            kept_out: Kept output channel indices.
            fold: Per input channel, the constant folded into the bias (0
                where nothing is folded), or `None`.
        """
        return {}

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        """Multiply-adds of one call (0 for layers without a kernel)."""
        return 0

    def call_macs(self, call: "Call", tensors_in: Tensors, tensor_out: Tensor) -> int:
        """Multiply-adds of one call of the layer, given all its input tensors.

        `tensors_in` follow `call.inputs`. Rules for layers that read several
        tensors (attention's query, key and value) override this; the others
        count `macs` of the first input.
        """
        return self.macs(call.layer, tensors_in[0], tensor_out)

    def weights_of(self, cls: type) -> tuple[WeightLayout, ...]:
        """The `weights` of layers of class `cls` (a family's own, where they differ)."""
        return self.weights

    def unit_biases(self, layer: Layer) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """`(bias, weights)` pairs of `layer`: a bias whose entries belong to units.

        Entry `b * units + j` of the bias (every row, every gate block `b`)
        belongs to output unit `j` of the `weights` (paths of `layer_weights`).
        Once those weights hold nothing of unit `j`, `WeightMasks` zeroes its
        bias entries and holds them at zero, so that the unit is gone whole.
        Defaults to none.
        """
        return ()

    def layer_weights(self, layer: Layer) -> tuple[WeightLayout, ...]:
        """The `weights` of `layer` itself (a wrapper's: those of what it wraps)."""
        return self.weights_of(type(layer))

    def regularizers(
        self,
        layer: keras.layers.Layer,
        strengths: Strengths,
    ) -> dict[str, keras.regularizers.Regularizer]:
        """The regularizers `regularize_model` puts on `layer`.

        By default one `DropNeuronRegularizer` per weight of `layer_weights`,
        its Li groups on the weight's output axes and its Lo groups on the
        input axes, with the weight's `gates`.

        Args:
            layer: The layer.
            strengths: The penalty strengths (`Strengths`).

        Returns:
            Constructor argument (or config path, see
            `WeightLayout.regularizer_argument`) -> regularizer; empty to
            leave the layer as it is.
        """
        return {
            layout.regularizer_argument: DropNeuronRegularizer(
                li=strengths.li,
                lo=strengths.lo,
                l1=strengths.l1,
                l2=strengths.l2,
                li_axis=layout.output_axes,
                lo_axis=layout.input_axes,
                scale_by_group_size=strengths.scale_by_group_size,
                gates=layout.gates,
            )
            for layout in self.layer_weights(layer)
        }

    def variable_regularizers(
        self,
        layer: keras.layers.Layer,
        strengths: Strengths,
    ) -> dict[str, keras.regularizers.Regularizer]:
        """Regularizers `regularize_model` sets on the copy's variables themselves.

        For layers that build their sublayers without regularizer arguments
        (a transformer block's feed-forward projections). The arguments are
        those of `regularizers`.

        Returns:
            Weight attribute path -> regularizer; by default none.
        """
        return {}

    def input_id_limit(self, layer: Layer) -> int | None:
        """The number of valid integer ids the layer reads (an Embedding's `input_dim`).

        `slim_model` draws the integer inputs of its verification batch below
        the smallest limit of a model's layers. Defaults to `None`: the layer
        reads no ids.
        """
        return None

    def unit_count(self, layer: Layer, tensor_out: Tensor) -> int:
        """For `SlimReport`: the layer's units (by default its output channels)."""
        return channels(tensor_out)

    def units_kept(self, layer: Layer, plan: "Plan", index: int) -> int:
        """For the reports: how many units of `layer` `slim_model` keeps.

        Args:
            layer: The layer.
            plan: The surgeon's `plan.Plan`.
            index: Index of the layer's first call in the graph.

        Returns:
            By default the kept channels of the call's first output.
        """
        return int(len(plan.kept[plan.graph.calls[index].outputs[0]]))

    def units_read(self, layer: Layer, reads: list[np.ndarray | None]) -> np.ndarray | None:
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

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
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

    def head_counts(
        self, layer: Layer, threshold: float, plan: "Plan", index: int
    ) -> tuple[int, int, int] | None:
        """For the reports: attention heads held inside the layer's units, or `None`.

        A block whose units are its feed-forward units can hold heads too.

        Returns:
            `(heads, alive, kept)`: the query heads, those alive (value and
            output slices not zero) and those `slim_model` keeps; `None` for
            a layer without such heads (the default).
        """
        return None

    def read_inside(self, layer: Layer, pairs: Pairs) -> np.ndarray | None:
        """For the reports: which units the layer reads back itself, or `None`.

        A recurrent layer's gates read every unit whose recurrent-kernel row
        is not zero; such a unit is read whatever its consumers do.
        """
        return None

    def describe_groups(self, cls: type) -> tuple[str, str]:
        """For the supported-layers table: the groups of class `cls`'s weights.

        Returns:
            The incoming group of output unit `j` and the outgoing group of
            input unit `i`, as index notation (`"-"` without weights).
        """
        layouts = self.weights_of(cls)
        return describe_groups(layouts, "output"), describe_groups(layouts, "input")

    def describe_surgery(self) -> str:
        """For the supported-layers table: what `slim_model` does with the rule's layers."""
        if type(self).barrier_reason is LayerRule.barrier_reason:
            return "kept whole"
        if self.width_argument:
            return f"units removed (`{self.width_argument}` lowered)"
        return "channels pass through"


class Barrier(LayerRule):
    """A layer whose channel semantics are not known: all channels are kept.

    Args:
        reason: Why, for the surgeon's report. Defaults to
            `"layer type without a rule"`.
    """

    def __init__(self, reason: str = "layer type without a rule") -> None:
        self.reason = reason

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        return self.reason

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.keep_whole(call)
        return None
