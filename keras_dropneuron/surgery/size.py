"""How much of a model the slim model keeps: multiply-adds, parameters, units.

The budget (`BudgetCallback`, `prune_to_budget`) asks what the surgeon would
build; the surgeon answers by building it: `slim_size_ratios` runs the
surgery's own graph -> plan -> rebuild pipeline (without verification) and
counts the result with the `SlimReport`'s figures.
"""

import keras

from keras_dropneuron import layer_rules, model_utils
from keras_dropneuron.surgery import hub_models
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan
from keras_dropneuron.surgery.rebuild import rebuild
from keras_dropneuron.surgery.report import SlimReport
from keras_dropneuron.weight_values import cached_values

SIZE_KINDS = ("macs", "params", "units")


def slim_size_ratios(model: keras.Model, threshold: float = 0.0) -> dict[str, float]:
    """The size of the model `slim_model` would build, as fractions of `model`'s.

    The surgeon's plan at `threshold` is built into a model (not verified)
    and counted as `size_ratios` counts a `SlimReport`. A keras-hub model is
    counted as `slim_model` builds it by default: its own class, every
    transformer block at the largest width any block keeps (at least as
    big as the `widths="per_layer"` model, so a budget it meets holds for
    both).

    Args:
        model: A Sequential or Functional model.
        threshold: Weights with `|w| <= threshold` count as zero. Defaults to
            `0.0`.

    Returns:
        A dict `{"macs": ..., "params": ..., "units": ...}` of fractions
        (1.0 where the original has none).

    Example:

    >>> slim_size_ratios(model)["macs"]  # 0.25: the slim model needs a quarter of the work
    """
    with cached_values():
        graph = build_graph(model)
        plan = make_plan(graph, threshold=threshold, drop_inputs=False, approximate=False)
        if hub_models.is_hub_model(model) and hub_models.why_not_same_class(plan) is None:
            slim = hub_models.same_class(model, plan)
        else:
            slim, _ = rebuild(plan, keep_regularizers=False)
    return size_ratios(SlimReport.compare(model, slim), model)


def size_ratios(report: SlimReport, model: keras.Model) -> dict[str, float]:
    """The `macs`, `params` and `units` fractions that a `SlimReport` of `model` keeps.

    Multiply-adds and parameters are summed over every row of the report;
    units over the layers DropNeuron prunes (those with a weight layout).

    Args:
        report: The `SlimReport` of `model` and its slim model.
        model: The source model.

    Returns:
        A dict `{"macs": ..., "params": ..., "units": ...}` of fractions
        (1.0 where the original has none).
    """
    pruned = {
        layer.name for layer in model_utils.iter_layers(model) if layer_rules.is_supported(layer)
    }
    totals = {kind: [0, 0] for kind in SIZE_KINDS}
    for row in report.rows:
        for kind in ("macs", "params"):
            totals[kind][0] += row[f"{kind}_before"]
            totals[kind][1] += row[f"{kind}_after"]
        if row["name"] in pruned:
            totals["units"][0] += row["units_before"]
            totals["units"][1] += row["units_after"]
    return {kind: (after / before if before else 1.0) for kind, (before, after) in totals.items()}
