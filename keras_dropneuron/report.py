"""sparsity_report: how many weights and units of a model are still alive."""

import keras
import numpy as np

from keras_dropneuron import checks, layer_rules, model_utils, normalized_units
from keras_dropneuron.layer_rules.base import attribute
from keras_dropneuron.surgery import hub_models
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import Plan, make_plan
from keras_dropneuron.weight_values import cached_values

_COLUMNS = (
    ("layer", "Layer (type)"),
    ("inputs_alive", "Inputs alive"),
    ("units_alive_incoming", "Units alive (in)"),
    ("units_alive_outgoing", "Units alive (out)"),
    ("units_alive", "Units alive (both)"),
    ("units_after_slim", "Slim keeps"),
    ("nonzero_weights", "Non-zero / total"),
    ("compression", "Compression"),
)


class SparsityReport:
    """Per-layer sparsity of a model; prints as a table, converts to dicts.

    For each supported layer:
    - `inputs_alive` / `inputs`: input units (channels) whose outgoing weights
      in this layer are not all zero;
    - `units_alive_incoming`: output units (filters) whose incoming weights are
      not all zero;
    - `units_alive_outgoing`: output units that some consumer still reads:
      a supported layer whose outgoing weights for the unit are not all zero,
      found through per-channel layers, merges, Flatten and into and out of
      nested models; a unit that is a model output, or that a layer of another
      kind reads, counts as read;
    - `units_alive` / `units`: alive on both sides, the paper's neuron count;
    - `units_after_slim`: the units `slim_model` keeps. It comes from the
      surgeon's own analysis, so it can differ from `units_alive`: larger
      where removing a dead unit cannot be proven exact (a constant read by a
      padded convolution, a unit feeding a barrier or a model output), smaller
      where the surgeon follows a unit further (through depthwise layers);
    - `nonzero_weights` / `total_weights` and `compression` (total / non-zero).

    LSTM, GRU and SimpleRNN: the inputs are the features (kernel rows), the
    units the hidden units, alive on the incoming side when any of their
    columns in any gate block of `kernel` or `recurrent_kernel` is not zero,
    and on the outgoing side also when their recurrent-kernel row is not zero
    (the layer's own gates read them).
    Bidirectional around LSTM, GRU or SimpleRNN: one row for the wrapper, its
    units the forward units followed by the backward ones (`units` is the
    sum of both directions' widths, whatever the merge mode), its inputs read
    by either direction; a unit is read when a consumer reads its channel
    (with `sum`, `ave`, `mul`, channel `j` is both directions' unit `j`; with
    `merge_mode=None` unit `j` of either direction counts as read when either
    output's channel `j` is, as the surgeon removes them together), and
    `units_after_slim` counts the units both directions keep.
    MultiHeadAttention: the units are the heads, alive when both their value
    projection (kernel slice or bias row) and their output-kernel slice are
    not all zero (the surgeon's criterion); the inputs are the channels some
    projection reads, and `units_after_slim` the heads `slim_model` keeps.

    keras-hub transformer blocks: the units are the feed-forward units;
    where the block's heads can be removed, the row also holds `heads`,
    `heads_alive` (value and output slices not zero) and `heads_after_slim`,
    and the table a "Heads alive" column.

    A Dense or Conv layer whose units a BatchNormalization reads: a unit is
    alive on the incoming side while its kernel column, or its `gamma` or
    `beta` there, is not zero (`keras_dropneuron.normalized_units`).

    `totals` sums the weights and units over the layers, and gives the
    model's `params` and `params_after_slim`, the parameter count of the model
    `slim_model(model, threshold=threshold)` returns.
    """

    def __init__(
        self,
        rows: list[dict],
        model_name: str,
        params: int = 0,
        params_after_slim: int | None = None,
    ) -> None:
        self.rows = rows
        self.model_name = model_name
        nonzero = sum(row["nonzero_weights"] for row in rows)
        total = sum(row["total_weights"] for row in rows)
        self.totals = {
            "units": sum(row["units"] for row in rows),
            "units_alive": sum(row["units_alive"] for row in rows),
            "units_after_slim": sum(row.get("units_after_slim", row["units"]) for row in rows),
            "nonzero_weights": nonzero,
            "total_weights": total,
            "compression": _compression(total, nonzero),
            "params": params,
            "params_after_slim": params if params_after_slim is None else params_after_slim,
        }
        if any("heads" in row for row in rows):
            for key in _HEAD_KEYS:
                self.totals[key] = sum(row.get(key, 0) for row in rows)

    def to_list(self) -> list[dict]:
        """Returns one plain dict per layer."""
        return [dict(row) for row in self.rows]

    def _has_heads(self) -> bool:
        return "heads" in self.totals

    def _cells(self, row):
        heads = []
        if self._has_heads():
            heads = [_heads_cell(row) if "heads" in row else ""]
        return [
            f"{row['layer']} ({row['type']})",
            f"{row['inputs_alive']}/{row['inputs']}",
            f"{row['units_alive_incoming']}/{row['units']}",
            f"{row['units_alive_outgoing']}/{row['units']}",
            f"{row['units_alive']}/{row['units']}",
            f"{row.get('units_after_slim', row['units'])}/{row['units']}",
            f"{row['nonzero_weights']:,}/{row['total_weights']:,}",
            f"{row['compression']:.2f}x",
            *heads,
        ]

    def __str__(self) -> str:
        header = [title for _, title in _COLUMNS]
        if self._has_heads():
            header.append("Heads alive (slim keeps)")
        body = [self._cells(row) for row in self.rows]
        totals = self.totals
        footer = [
            "Total",
            "",
            "",
            "",
            f"{totals['units_alive']}/{totals['units']}",
            f"{totals['units_after_slim']}/{totals['units']}",
            f"{totals['nonzero_weights']:,}/{totals['total_weights']:,}",
            f"{totals['compression']:.2f}x",
        ]
        if self._has_heads():
            footer.append(_heads_cell(totals))
        widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        rule = "-" * len(line(header))
        lines = [f'Sparsity report: "{self.model_name}"', rule, line(header), rule]
        lines += [line(cells) for cells in body]
        lines += [rule, line(footer), rule]
        lines.append(
            f"slim_model keeps {totals['params_after_slim']:,} of {totals['params']:,} parameters"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def print(self) -> None:
        """Prints the table, like `model.summary()`."""
        print(self)


_HEAD_KEYS = ("heads", "heads_alive", "heads_after_slim")


def _heads_cell(counts: dict) -> str:
    return f"{counts['heads_alive']}/{counts['heads']} ({counts['heads_after_slim']})"


def _head_counts(layer, threshold, graph, plan) -> dict:
    """`heads`, `heads_alive`, `heads_after_slim` of a block holding heads, or `{}`."""
    calls = graph.calls_of_layer.get(id(layer))
    if not calls or plan.rules[calls[0]] is layer_rules.BARRIER:
        return {}
    counts = plan.rules[calls[0]].head_counts(layer, threshold, plan, calls[0])
    return {} if counts is None else dict(zip(_HEAD_KEYS, counts, strict=True))


def _compression(total, nonzero):
    """`total / nonzero`: inf when every weight is zero, 1 when there are none."""
    if not total:
        return 1.0
    return total / nonzero if nonzero else float("inf")


def _layer_sides(layer, threshold):
    """Alive masks of the input side and output side of a supported layer."""
    layouts = layer_rules.weight_layouts(layer)
    values = [np.asarray(attribute(layer, layout.attribute).numpy()) for layout in layouts]
    pairs = [
        (layout, np.where(np.abs(value) > threshold, value, 0))
        for layout, value in zip(layouts, values, strict=True)
    ]
    rule = layer_rules.rule_for(layer)
    inputs, outputs = rule.alive_sides(layer, pairs, threshold)
    return inputs.reshape(-1), outputs.reshape(-1), values, rule.read_inside(layer, pairs)


def _units_after_slim(layer, width, graph, plan):
    """How many units of `layer` `slim_model` keeps (its rule counts them on the plan)."""
    calls = graph.calls_of_layer.get(id(layer))
    if not calls or plan.rules[calls[0]] is layer_rules.BARRIER:
        return width  # kept whole (its channels need not be on the last axis)
    return plan.rules[calls[0]].units_kept(layer, plan, calls[0])


def params_after_slim(plan: Plan) -> int:
    """The parameter count of the model `slim_model` builds from `plan`."""
    total = 0
    for indices in plan.graph.calls_of_layer.values():
        index = indices[0]
        call = plan.graph.calls[index]
        layer = call.layer
        if not plan.resized(index):
            total += layer.count_params() if getattr(layer, "built", False) else 0
            continue
        sliced = plan.rules[index].resize(layer, {}, plan.cut(index))
        total += sum(int(np.size(value)) for value in sliced.values())
    return total


def _outgoing_alive(layer, width, graph, read):
    """Which of `layer`'s `width` output units some consumer reads, over all its calls.

    Units of a tensor that nothing reads count as read (all alive).
    """
    calls = graph.calls_of_layer.get(id(layer), [])
    alive = np.zeros(width, dtype=bool) if calls else np.ones(width, dtype=bool)
    rule = layer_rules.rule_for(layer)
    for index in calls:
        reads = rule.units_read(layer, [read.get(key) for key in graph.calls[index].outputs])
        if reads is None or reads.size != width:
            return np.ones(width, dtype=bool)
        alive |= reads
    return alive


def sparsity_report(
    model: keras.Model, threshold: float = 0.0, widths: str = "uniform"
) -> SparsityReport:
    """Reports, per layer, the weights and units of `model` that are alive.

    Args:
        model: A Sequential or Functional model, nested models included.
        threshold: Weights with `|w| <= threshold` count as zero. Defaults to
            `0.0` (exact zeros only).
        widths: For keras-hub models, the `slim_model` widths whose counts
            `units_after_slim`, `heads_after_slim` and `params_after_slim`
            give: `"uniform"` (the default, as `slim_model`'s: every block
            at the largest width any block keeps) or `"per_layer"`.
            Ignored for other models.

    Returns:
        A `SparsityReport`: `print(report)` shows a table, `report.to_list()`
        gives one dict per layer and `report.totals` the model's totals.

    A model without supported layers gives an empty report (no rows, totals
    of zero, compression 1).

    Raises:
        TypeError: If `model` is not a Keras model or `threshold` not a number.
        ValueError: For subclassed or unbuilt models, bad thresholds and
            weights that are not finite (a NaN would otherwise count as zero).

    Example:

    >>> print(sparsity_report(model))
    """
    threshold = checks.check_non_negative_float("threshold", threshold)
    checks.check_choice("widths", widths, hub_models.WIDTHS)
    checks.check_model("model", model)
    model_utils.check_finite_weights(model_utils.select_layers(model), "report on")
    graph = build_graph(model)
    with cached_values():
        plan = make_plan(graph, threshold=threshold, drop_inputs=False, approximate=False)
        if widths == "uniform":
            plan = hub_models.uniform_plan(model, plan)
        params_after = params_after_slim(plan)
    normalized = normalized_units.find_normalized_units(model)
    rows = []
    for layer in model_utils.iter_layers(model):
        if not layer_rules.is_supported(layer):
            continue
        inputs, incoming, values, inside = _layer_sides(layer, threshold)
        if id(layer) in normalized:  # gamma and beta are part of each unit's group
            for variable in normalized_units.normalization_weights(normalized[id(layer)].norm):
                incoming = incoming | (np.abs(np.asarray(variable.numpy())) > threshold)
        outgoing = _outgoing_alive(layer, incoming.size, graph, plan.read)
        if inside is not None:  # a recurrent layer reads its units back
            outgoing = outgoing | inside
        nonzero = sum(int(np.count_nonzero(np.abs(v) > threshold)) for v in values)
        total = sum(int(v.size) for v in values)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "inputs": int(inputs.size),
                "inputs_alive": int(inputs.sum()),
                "units": int(incoming.size),
                "units_alive_incoming": int(incoming.sum()),
                "units_alive_outgoing": int(outgoing.sum()),
                "units_alive": int((incoming & outgoing).sum()),
                "units_after_slim": _units_after_slim(layer, incoming.size, graph, plan),
                "nonzero_weights": nonzero,
                "total_weights": total,
                "compression": _compression(total, nonzero),
                **_head_counts(layer, threshold, graph, plan),
            }
        )
    return SparsityReport(
        rows, model.name, params=model.count_params(), params_after_slim=params_after
    )
