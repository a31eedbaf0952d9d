"""Decides which channels to cut: the channel-dependency analysis.

Every channel of every tensor is a *slot*. Layers that pass a channel through
(activations, BN, pooling, merges, Concatenate, Flatten, depthwise) join slots
into groups that must be kept or removed together. A group is removed only if
every slot in it is *safe*: every layer reading it either ignores it (all its
outgoing weights are within `threshold`) or can absorb its constant value into
its bias. Barriers and model outputs make their slots unsafe.
"""

import dataclasses

import numpy as np

from keras_dropneuron.surgery import rules
from keras_dropneuron.surgery.graph import channels


@dataclasses.dataclass
class Plan:
    """The outcome of the analysis.

    Attributes:
        graph: The flattened source model.
        kinds: Kind of each call (see `rules`).
        kept: Canonical tensor key -> kept channel indices.
        folds: Call index -> per-input-channel constants folded into its bias.
        inexact: Whether some fold is only approximately right.
        kept_inputs: Model input name -> kept channel indices.
    """

    graph: object
    kinds: list
    kept: dict
    folds: dict
    inexact: bool
    kept_inputs: dict


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


def _kinds(graph):
    kinds = []
    leaked = any(call.training and rules.takes_training(call.layer) for call in graph.calls)
    for call in graph.calls:
        ins = [graph.tensors[k] for k in call.inputs]
        outs = [graph.tensors[k] for k in call.outputs]
        kinds.append(rules.classify_call(call, ins, outs, leaked))
    # A shared layer is sliced once, so all its calls must agree.
    for indices in graph.calls_of_layer.values():
        if len({kinds[i] for i in indices}) > 1:
            for i in indices:
                kinds[i] = "barrier"
    return kinds


def make_plan(graph, *, threshold, drop_inputs, approximate):
    """Runs the analysis.

    Args:
        graph: A `Graph` from `build_graph`.
        threshold: Weights with absolute value `<= threshold` count as zero.
        drop_inputs: Whether model input channels may be removed.
        approximate: Whether constants may be folded where it is not exact.

    Returns:
        A `Plan`.
    """
    kinds = _kinds(graph)
    offsets, size = {}, 0
    for key, tensor in graph.tensors.items():
        offsets[key] = size
        size += channels(tensor)

    def slots(key):
        return np.arange(offsets[key], offsets[key] + channels(graph.tensors[key]))

    unsafe = np.zeros(size, dtype=bool)
    edges = []
    constants = {}
    inexact_consumers = set()
    for key in graph.inputs:
        constants[key] = np.full(channels(graph.tensors[key]), np.nan)
        if not drop_inputs:
            unsafe[slots(key)] = True

    def join(a, b):
        edges.append((np.asarray(a), np.asarray(b)))

    for index, (call, kind) in enumerate(zip(graph.calls, kinds, strict=True)):
        layer = call.layer
        ins = [constants.get(k, np.full(channels(graph.tensors[k]), np.nan)) for k in call.inputs]
        outs = call.outputs
        shared = graph.calls_of_layer[id(layer)]
        if kind == "barrier":
            for key in call.inputs + outs:
                unsafe[slots(key)] = True
            for key in outs:
                constants[key] = np.full(channels(graph.tensors[key]), np.nan)
            continue
        if kind in rules.CONSUMER_KINDS:
            ignored = rules.outgoing_zero(layer, kind, threshold)
            known = ~np.isnan(ins[0])
            exact = rules.fold_is_exact(layer, kind) and len(shared) == 1
            foldable = known & (exact | (ins[0] == 0) | (approximate and len(shared) == 1))
            unsafe[slots(call.inputs[0])] |= ~(ignored | foldable)
            if approximate and not exact:
                inexact_consumers.add(index)
        elif kind == "embedding":
            unsafe[slots(call.inputs[0])] = True
        if kind in rules.WEIGHTED_KINDS and rules.mixes_output_channels(layer):
            value = np.full(channels(graph.tensors[outs[0]]), np.nan)
            unsafe[slots(outs[0])] = True
        elif kind in rules.PRODUCER_KINDS or kind == "depthwise":
            value = rules.output_constants(layer, kind, threshold, ins, approximate)
        elif kind in ("bn", "prelu", "pass"):
            value = rules.per_channel_constants(layer, kind, ins)
            join(slots(call.inputs[0]), slots(outs[0]))
        elif kind == "merge":
            value = rules.merge_constants(layer, ins)
            for key in call.inputs:
                join(slots(key), slots(outs[0]))
        elif kind == "concat":
            value = np.concatenate(ins)
            join(np.concatenate([slots(k) for k in call.inputs]), slots(outs[0]))
        elif kind == "flatten":
            width = len(ins[0])
            repeats = channels(graph.tensors[outs[0]]) // width
            value = np.tile(ins[0], repeats)
            out_slots = slots(outs[0])
            join(out_slots, offsets[call.inputs[0]] + np.arange(len(out_slots)) % width)
        if kind == "depthwise":
            out_slots = slots(outs[0])
            multiplier = len(out_slots) // len(ins[0])
            join(
                out_slots,
                offsets[call.inputs[0]] + np.arange(len(out_slots)) // multiplier,
            )
        constants[outs[0]] = value
        # Calls of a shared layer read and write the same weight rows/columns.
        if kind in rules.WEIGHTED_KINDS + ("bn", "prelu", "embedding"):
            first = graph.calls[shared[0]]
            if first is not call:
                join(slots(first.inputs[0]), slots(call.inputs[0]))
                join(slots(first.outputs[0]), slots(outs[0]))

    for key in graph.outputs:
        unsafe[slots(key)] = True

    labels = _components(size, edges)
    group_unsafe = np.zeros(size, dtype=bool)
    np.logical_or.at(group_unsafe, labels, unsafe)
    removed = ~group_unsafe[labels]
    # Never leave a tensor without channels: keep the group of its channel 0.
    changed = True
    while changed:
        changed = False
        for key, tensor in graph.tensors.items():
            width = channels(tensor)
            if width and removed[offsets[key] : offsets[key] + width].all():
                removed[labels == labels[offsets[key]]] = False
                changed = True

    kept = {key: np.flatnonzero(~removed[slots(key)]) for key in graph.tensors}
    folds = {}
    inexact = False
    for index, (call, kind) in enumerate(zip(graph.calls, kinds, strict=True)):
        if kind not in rules.CONSUMER_KINDS:
            continue
        key = call.inputs[0]
        value = constants.get(key)
        gone = removed[slots(key)] & ~np.isnan(value)
        if gone.any():
            folds[index] = np.where(gone, np.nan_to_num(value), 0.0)
            if index in inexact_consumers and np.any(folds[index] != 0):
                inexact = True
    kept_inputs = {}
    if drop_inputs:
        for key in graph.inputs:
            tensor = graph.tensors[key]
            kept_inputs[tensor._keras_history.operation.name] = kept[key]
    return Plan(graph, kinds, kept, folds, inexact, kept_inputs)
