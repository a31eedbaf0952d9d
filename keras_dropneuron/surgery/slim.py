"""`slim_model`: rebuild a model without its dead units."""

import sys

import keras
import numpy as np

from keras_dropneuron import checks
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan
from keras_dropneuron.surgery.rebuild import rebuild
from keras_dropneuron.surgery.report import SlimReport

# A progress bar only helps on big models and in an interactive terminal.
_PROGRESS_MIN_CALLS = 200


def random_inputs(model, batch_size=4, seed=0):
    """Random inputs matching `model.inputs` (unknown dims become 8).

    Integer inputs draw ids below the smallest `input_dim` of the model's
    Embedding layers (2 when it has none), so every id is valid.
    """
    rng = np.random.default_rng(seed)
    vocab = min(
        (
            layer.input_dim
            for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.Embedding)
        ),
        default=2,
    )
    data = []
    for tensor in model.inputs:
        shape = (batch_size,) + tuple(d or 8 for d in tensor.shape[1:])
        if "int" in str(tensor.dtype):
            values = rng.integers(0, vocab, shape)
        else:
            values = rng.standard_normal(shape)
        data.append(values.astype(tensor.dtype))
    return data


def _deviation(before, after, kept_inputs):
    data = random_inputs(before)
    sliced = [
        x[..., kept_inputs[t._keras_history.operation.name]] if kept_inputs else x
        for x, t in zip(data, before.inputs, strict=True)
    ]
    old = keras.tree.flatten(before(data if len(data) > 1 else data[0]))
    new = keras.tree.flatten(after(sliced if len(sliced) > 1 else sliced[0]))
    return float(
        max(np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(old, new, strict=True))
    )


def slim_model(
    model: keras.Model,
    *,
    threshold: float = 0.0,
    keep_regularizers: bool = True,
    drop_inputs: bool = False,
    approximate: bool = False,
    return_report: bool = False,
):
    """Rebuilds `model` physically smaller, without its dead units.

    A unit (neuron, filter, channel) is removed when the surgeon can prove
    that the model computes the same function without it: either every layer
    reading it has zero weights for it, or its incoming weights are zero so it
    is the constant `activation(bias)` (carried through BatchNormalization and
    other per-channel layers), which is folded into the biases of the Dense
    layers or `padding="valid"` (or 1x1) convolutions reading it. Coupled
    channels (residual `Add`, `Concatenate`, `Flatten`, depthwise multiplier
    blocks) are removed together or not at all. Barriers (Reshape, Permute,
    LayerNormalization, attention, Lambda, unknown layers, model outputs)
    keep all their channels.

    Nested Functional/Sequential submodels are inlined: the result is one flat
    Functional model whose layers keep their names (a clashing name gets the
    submodel's name as prefix), activations, dtype policies and trainable
    flags. The result is not compiled. `model` is never modified.

    Args:
        model: A Functional model or a built `keras.Sequential`.
        threshold: Weights with absolute value `<= threshold` count as zero.
            Above 0 the result is no longer exact. Defaults to `0.0`.
        keep_regularizers: Whether the new layers keep their weight
            regularizers (activity regularizers are always kept). Defaults to
            `True`.
        drop_inputs: Whether unused channels of the model inputs are removed
            too; the report's `kept_inputs` then says which to feed. Defaults
            to `False`.
        approximate: Whether constants may also be folded into padded
            convolutions, where the border makes the fold inexact; the report
            then holds the measured `max_deviation`. Defaults to `False`.
        return_report: Whether to also return a `SlimReport`. Defaults to
            `False`.

    Returns:
        The slim `keras.Model`, or `(model, report)` when `return_report`.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `threshold` not a number
            or a flag not a bool.
        ValueError: If `model` is subclassed or not built, `threshold` is
            negative, NaN or infinite, or a kept layer cannot be re-created
            from its config.

    Example:

    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8, activation="relu")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    >>> kernel = model.layers[2].kernel.numpy()
    >>> kernel[:5] = 0  # hidden units 0-4 are never read
    >>> model.layers[2].kernel.assign(kernel)
    >>> slim = slim_model(model)
    >>> slim.layers[1].units
    3
    """
    checks.check_non_negative_float("threshold", threshold)
    for name, value in (
        ("keep_regularizers", keep_regularizers),
        ("drop_inputs", drop_inputs),
        ("approximate", approximate),
        ("return_report", return_report),
    ):
        checks.check_bool(name, value)
    graph = build_graph(model)
    plan = make_plan(
        graph,
        threshold=float(threshold),
        drop_inputs=bool(drop_inputs),
        approximate=bool(approximate),
    )
    progress = None
    if len(graph.calls) >= _PROGRESS_MIN_CALLS and sys.stdout.isatty():
        progress = keras.utils.Progbar(len(graph.calls), verbose=1)
    slim = rebuild(plan, keep_regularizers=keep_regularizers, progress=progress)
    if not return_report:
        return slim
    deviation = _deviation(model, slim, plan.kept_inputs) if approximate else None
    report = SlimReport.compare(model, slim, kept_inputs=plan.kept_inputs, max_deviation=deviation)
    return slim, report
