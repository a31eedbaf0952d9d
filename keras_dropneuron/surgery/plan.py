"""Decides which channels to cut: the one analysis of what is dead, and why.

Every channel of every tensor is a *slot*. Each call's layer rule
(`keras_dropneuron.layer_rules`) joins slots that must be kept or removed
together (per-channel layers, merges, Concatenate, Flatten, depthwise blocks),
marks the slots it must keep, and says which input channels its weights still
read. A group of slots is removed only if no slot in it must be kept: every
layer reading it either ignores it (all its outgoing weights are within
`threshold`) or can absorb its constant value into its bias. Barriers and
model outputs keep their slots. `slim_model` builds from the `Plan`, and
`sparsity_report` reads the same `Plan`.
"""

import dataclasses

import keras
import numpy as np

from keras_dropneuron import keras_internals, layer_rules
from keras_dropneuron.layer_rules.base import attribute, channels
from keras_dropneuron.surgery.graph import Call, Graph

# A tensor's canonical key in the flattened graph (see `graph.build_graph`).
TensorKey = tuple


@dataclasses.dataclass
class Plan:
    """The outcome of the analysis.

    Attributes:
        graph: The flattened source model.
        rules: The layer rule of each call (`layer_rules.BARRIER` when kept whole).
        reasons: Per call, why it is kept whole, or `None`.
        kept: Canonical tensor key -> kept channel indices.
        read: Canonical tensor key -> which channels some consumer reads
            (the model outputs read all of theirs).
        folds: Call index -> per-input-channel constants folded into its bias.
        inexact: Whether some fold is only approximately right.
        kept_inputs: Model input name -> kept channel indices.
        inner: Call index -> kept units inside the layer that are not
            channels (attention heads), for layers that lose some.
    """

    graph: Graph
    rules: list
    reasons: list
    kept: dict
    read: dict
    folds: dict
    inexact: bool
    kept_inputs: dict
    inner: dict = dataclasses.field(default_factory=dict)

    def cut(self, index: int) -> layer_rules.Cut:
        """The `layer_rules.Cut` of one call."""
        call = self.graph.calls[index]
        return layer_rules.Cut(
            kept_in=self.kept[call.inputs[0]] if call.inputs else None,
            kept_out=self.kept[call.outputs[0]],
            fold=self.folds.get(index),
            inner=self.inner.get(index),
        )

    def resized(self, index: int) -> bool:
        """Whether the call's layer loses channels or takes a folded constant."""
        call = self.graph.calls[index]
        if index in self.folds or index in self.inner:
            return True
        if self.rules[index] is layer_rules.BARRIER:
            return False
        keys = call.inputs[:1] + call.outputs[:1]
        return any(len(self.kept[key]) != channels(self.graph.tensors[key]) for key in keys)


class Analysis:
    """The state the layer rules fill in, one call at a time."""

    def __init__(self, graph: Graph, threshold: float, approximate: bool):
        self.graph = graph
        self.threshold = threshold
        self.approximate = approximate
        self.offsets, size = {}, 0
        for key, tensor in graph.tensors.items():
            self.offsets[key] = size
            size += channels(tensor)
        self.size = size
        self.kept = np.zeros(size, dtype=bool)
        self.reads = np.zeros(size, dtype=bool)
        self.edges = []
        self.inexact_consumers = set()
        self.inner = {}

    def tensor(self, key: TensorKey) -> keras.KerasTensor:
        """The KerasTensor of key `key` (its shape and dtype)."""
        return self.graph.tensors[key]

    def slots(self, key: TensorKey) -> np.ndarray:
        """The slot numbers of the channels of tensor `key`."""
        return np.arange(self.offsets[key], self.offsets[key] + channels(self.tensor(key)))

    def join(self, a: np.ndarray, b: np.ndarray) -> None:
        """Slots `a[i]` and `b[i]` are kept or removed together."""
        self.edges.append((np.asarray(a), np.asarray(b)))

    def keep(self, key: TensorKey, mask: np.ndarray | None = None) -> None:
        """Channels of tensor `key` (all, or where `mask`) must stay."""
        slots = self.slots(key)
        self.kept[slots if mask is None else slots[mask]] = True

    def read(self, key: TensorKey, mask: np.ndarray | None = None) -> None:
        """Some consumer reads these channels of tensor `key`."""
        slots = self.slots(key)
        self.reads[slots if mask is None else slots[mask]] = True

    def keep_whole(self, call: Call) -> None:
        """Every channel the call reads and writes stays, and its inputs are read."""
        for key in call.inputs + call.outputs:
            self.keep(key)
        for key in call.inputs:
            self.read(key)

    def is_shared(self, call: Call) -> bool:
        """Whether the call's layer is called more than once in the graph."""
        return len(self.graph.calls_of_layer[id(call.layer)]) > 1


def _join_calls(analysis: Analysis, first: TensorKey, other: TensorKey) -> None:
    """Ties the channels two calls of one layer read or write through its weights.

    Calls whose last axes differ in size (an `Embedding` of id sequences of
    two lengths: that axis is not channels) keep both tensors whole.
    """
    a, b = analysis.slots(first), analysis.slots(other)
    if len(a) == len(b):
        analysis.join(a, b)
    else:
        analysis.keep(first)
        analysis.keep(other)


def _components(size, edges):
    """Connected-component labels of `size` nodes joined by `edges`."""
    labels = np.arange(size)
    if not edges:
        return labels
    a = np.concatenate([e[0] for e in edges])
    b = np.concatenate([e[1] for e in edges])
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping: point every label at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def unknown_weights(layer: keras.layers.Layer, rule: layer_rules.LayerRule) -> list[str]:
    """The paths of `layer`'s weights that `rule` does not know how to slice."""
    known = {id(weight) for name in rule.state if (weight := attribute(layer, name)) is not None}
    # An operation applied in the graph (`keras.ops.gelu`) holds no weights.
    return [weight.path for weight in getattr(layer, "weights", ()) if id(weight) not in known]


def holds_only_known_weights(layer: keras.layers.Layer, rule: layer_rules.LayerRule) -> bool:
    """Whether every weight of `layer` is one `rule` knows how to slice."""
    return not unknown_weights(layer, rule)


def computes_like_keras(layer: keras.layers.Layer) -> bool:
    """Whether the `call()` that `layer` runs is the one of a Keras layer class."""
    module = getattr(type(layer).call, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def runs_in_training_mode(
    layer: keras.layers.Layer, rule: layer_rules.LayerRule, training: bool | None, leaked: bool
) -> bool:
    """Whether a call may run in training mode when the model runs on data.

    Such a layer uses batch statistics or random masks, so the constant a dead
    unit takes is not carried through it. `training` is the call's explicit
    flag (`Call.training`). Keras hands an explicit `training=True` on to every
    layer called after it in the same model call (the call context), so once
    any call in the model sets it (`leaked`), every layer whose rule is
    `training_sensitive` without its own `training=False` counts.
    """
    if not rule.training_sensitive or not keras_internals.takes_training(layer):
        return False
    return training if training is not None else leaked


def _positions_only(tensor: keras.KerasTensor) -> bool:
    """Whether `tensor` is a mask or integer ids: its last axis holds positions, not channels.

    A padding mask or a sequence of ids of open length (`keras.Input((None,))`) has
    no channel count, and needs none: the layer reading it (an `Embedding`, a
    recurrent layer's mask) never slices it.
    """
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return dtype == "bool" or "int" in dtype


def rule_of_call(
    call: Call,
    in_tensors: list[keras.KerasTensor],
    out_tensors: list[keras.KerasTensor],
    leaked: bool = False,
) -> tuple[layer_rules.LayerRule, str | None]:
    """The rule that analyses `call`, and why it is a barrier (or `None`)."""
    layer = call.layer
    rule = layer_rules.rule_for(layer)
    if rule is layer_rules.BARRIER:
        return rule, rule.reason
    known = all(channels(t) for t in out_tensors)
    if rule.side_inputs_whole:  # only the input shaped like the output needs its width
        known = known and any(channels(t) == channels(out_tensors[0]) for t in in_tensors)
    else:
        known = known and all(channels(t) or _positions_only(t) for t in in_tensors)
    if not known:
        return layer_rules.BARRIER, "channel count not known"
    reason = rule.barrier_reason(layer, in_tensors, out_tensors)
    if reason is None and runs_in_training_mode(layer, rule, call.training, leaked):
        reason = "runs in training mode (batch statistics or random masks)"
    trusted = computes_like_keras(layer) or layer_rules.runs_registered_call(layer)
    if reason is None and not trusted:
        reason = f"{type(layer).__name__} overrides call()"
    if reason is None and (unknown := unknown_weights(layer, rule)):
        names = ", ".join(path.rsplit("/", 1)[-1] for path in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        reason = f"holds weights its rule does not know ({names}{more})"
    return (layer_rules.BARRIER, reason) if reason else (rule, None)


def _rules(graph):
    leaked = any(
        call.training and keras_internals.takes_training(call.layer) for call in graph.calls
    )
    rules, reasons = [], []
    for call in graph.calls:
        ins = [graph.tensors[k] for k in call.inputs]
        outs = [graph.tensors[k] for k in call.outputs]
        rule, reason = rule_of_call(call, ins, outs, leaked)
        rules.append(rule)
        reasons.append(reason)
    # A shared layer is sliced once, so all its calls must agree.
    for indices in graph.calls_of_layer.values():
        if len({id(rules[i]) for i in indices}) > 1:
            for i in indices:
                reasons[i] = reasons[i] or "shared layer whose calls disagree"
                rules[i] = layer_rules.BARRIER
    return rules, reasons


def _settle(graph, rules, analysis, labels, removed, round_to):
    """Keeps removed channels until every width constraint holds.

    - No tensor is left without channels (the group of its channel 0 stays).
    - A rule's own constraint holds (`LayerRule.must_keep`: a grouped
      convolution keeps its groups equal).
    - With `round_to > 1`, each resized layer keeps a multiple of `round_to`
      channels, or its whole width when rounding up would reach it (per part
      of its channels: `LayerRule.width_parts`).

    Keeping a dead channel is always exact, so this only costs work. A kept
    channel brings its whole group back (a residual `Add` keeps both
    branches), so a count may end above the next multiple. Channels only
    ever come back, so the loop ends.
    """

    def restore(slots):
        changed = False
        for slot in slots:
            if removed[slot]:
                removed[labels == labels[slot]] = False
                changed = True
        return changed

    resized = [
        (call, rule) for call, rule in zip(graph.calls, rules, strict=True) if rule.width_argument
    ]
    changed = True
    while changed:
        changed = False
        for key in graph.tensors:
            slots = analysis.slots(key)
            if len(slots) and removed[slots].all():
                changed |= restore(slots[:1])
        for call, rule in resized:
            slots = analysis.slots(call.outputs[0])
            changed |= restore(slots[np.asarray(rule.must_keep(call.layer, removed[slots]), int)])
            for part in rule.width_parts(call.layer, len(slots)):
                gone = slots[part][removed[slots[part]]]
                kept = len(part) - len(gone)
                target = min(len(part), -(-kept // round_to) * round_to)
                changed |= restore(gone[: target - kept])


def make_plan(
    graph: Graph,
    *,
    threshold: float,
    drop_inputs: bool,
    approximate: bool,
    round_to: int = 1,
) -> Plan:
    """Runs the analysis.

    Args:
        graph: A `Graph` from `build_graph`.
        threshold: Weights with absolute value `<= threshold` count as zero.
        drop_inputs: Whether model input channels may be removed.
        approximate: Whether constants may be folded where it is not exact.
        round_to: Resized layers keep a multiple of this many channels (or
            all of them), by keeping some dead ones. Defaults to `1`.

    Returns:
        A `Plan`.
    """
    rules, reasons = _rules(graph)
    analysis = Analysis(graph, threshold, approximate)
    constants = {}

    def unknown(key):
        return np.full(channels(graph.tensors[key]), np.nan)

    for key in graph.inputs:
        constants[key] = unknown(key)
        if not drop_inputs:
            analysis.keep(key)
    for index, (call, rule) in enumerate(zip(graph.calls, rules, strict=True)):
        ins = [constants.get(k, unknown(k)) for k in call.inputs]
        values = rule.analyze(analysis, index, call, ins)
        if not isinstance(values, list):
            values = [values]
        for i, key in enumerate(call.outputs):
            value = values[i] if i < len(values) else None
            constants[key] = unknown(key) if value is None else value
        # Calls of a shared layer read and write the same weight rows/columns.
        first = graph.calls[graph.calls_of_layer[id(call.layer)][0]]
        if rule.state and first is not call:
            _join_calls(analysis, first.inputs[0], call.inputs[0])
            _join_calls(analysis, first.outputs[0], call.outputs[0])
    for key in graph.outputs:
        analysis.keep(key)
        analysis.read(key)

    labels = _components(analysis.size, analysis.edges)
    group_kept = np.zeros(analysis.size, dtype=bool)
    np.logical_or.at(group_kept, labels, analysis.kept)
    removed = ~group_kept[labels]
    _settle(graph, rules, analysis, labels, removed, round_to)
    if round_to > 1:
        for index, inner in analysis.inner.items():
            analysis.inner[index] = rules[index].round_inner(
                graph.calls[index].layer, inner, round_to
            )
    group_read = np.zeros(analysis.size, dtype=bool)
    np.logical_or.at(group_read, labels, analysis.reads)
    read = group_read[labels]

    kept = {key: np.flatnonzero(~removed[analysis.slots(key)]) for key in graph.tensors}
    folds = {}
    inexact = False
    for index, (call, rule) in enumerate(zip(graph.calls, rules, strict=True)):
        if not rule.consumes:
            continue
        key = call.inputs[0]
        value = constants.get(key)
        gone = removed[analysis.slots(key)] & ~np.isnan(value)
        if gone.any():
            folds[index] = np.where(gone, np.nan_to_num(value), 0.0)
            if index in analysis.inexact_consumers and np.any(folds[index] != 0):
                inexact = True
    kept_inputs = {}
    if drop_inputs:
        for key in graph.inputs:
            kept_inputs[keras_internals.input_name(graph.tensors[key])] = kept[key]
    return Plan(
        graph=graph,
        rules=rules,
        reasons=reasons,
        kept=kept,
        read={key: read[analysis.slots(key)] for key in graph.tensors},
        folds=folds,
        inexact=inexact,
        kept_inputs=kept_inputs,
        inner=analysis.inner,
    )
