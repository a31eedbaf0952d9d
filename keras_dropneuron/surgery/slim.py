"""`slim_model`: rebuild a model without its dead units."""

import sys
import warnings

import keras
import numpy as np

from keras_dropneuron import checks
from keras_dropneuron.surgery import batches, hub_models, latency
from keras_dropneuron.surgery import verify as verification
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan
from keras_dropneuron.surgery.rebuild import rebuild
from keras_dropneuron.surgery.report import SlimReport
from keras_dropneuron.weight_values import cached_values, numpy


def _same_class(model, plan, per_layer, verify, verify_inputs):
    """The slim keras-hub model as its own class, or `per_layer()` with a warning why not."""
    reason = hub_models.why_not_same_class(plan)
    if reason is None:
        try:
            candidate = hub_models.same_class(model, plan)
        except (ValueError, TypeError) as error:
            reason = f"re-creating it failed ({error})"
    if reason is not None:
        warnings.warn(
            f"slim_model returns a Functional model for the {type(model).__name__} "
            f"{model.name!r}, not its own class: {reason}.",
            stacklevel=3,
        )
        with cached_values():
            return per_layer()
    if verify:
        verification.verify_outputs(model, candidate, verify_inputs)
    return candidate


def _kept_whole(plan):
    """Name -> reason, for the layers with weights that the surgeon kept whole."""
    return {
        call.name: reason
        for call, reason in zip(plan.graph.calls, plan.reasons, strict=True)
        if reason and getattr(call.layer, "weights", None)
    }


# A progress bar only helps on big models and in an interactive terminal.
_PROGRESS_MIN_CALLS = 200


def _check_finite_weights(graph):
    """Refuses NaN or infinite weights: the slim model would hide them."""
    for call in graph.calls:
        for weight in getattr(call.layer, "weights", ()):
            value = numpy(weight)
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                raise ValueError(
                    f"Invalid value for argument `model`: expected finite weights. "
                    f"Received: layer {call.layer.name!r} holds NaN or infinite "
                    f"values in its weight {weight.name!r}. Nothing was slimmed."
                )


def slim_model(
    model: keras.Model,
    *,
    threshold: float = 0.0,
    keep_regularizers: bool = True,
    drop_inputs: bool = False,
    approximate: bool = False,
    return_report: bool = False,
    verify: bool = True,
    verify_inputs: np.ndarray | list | dict | None = None,
    round_to: int = 1,
    benchmark: int | None = None,
    widths: str = "uniform",
) -> keras.Model | tuple[keras.Model, SlimReport]:
    """Rebuilds `model` physically smaller, without its dead units.

    A unit (neuron, filter, channel) is removed when the surgeon can prove
    that the model computes the same function without it: either every layer
    reading it has zero weights for it, or its incoming weights are zero so it
    is the constant `activation(bias)` (carried through BatchNormalization and
    other per-channel layers), which is folded into the biases of the Dense
    layers or `padding="valid"` (or 1x1) convolutions reading it. Coupled
    channels (residual `Add`, `Concatenate`, `Flatten`, depthwise multiplier
    blocks) are removed together or not at all. Barriers (a Reshape that
    changes the last axis, Permute, LayerNormalization, attention, Lambda,
    unknown layers, model outputs) keep all their channels.

    Nested Functional/Sequential submodels are inlined: the result is one flat
    Functional model whose layers keep their names (a clashing name gets the
    submodel's name as prefix), activations, dtype policies and trainable
    flags. The result is not compiled. `model` is never modified. A
    keras-hub `Backbone` or `Task` comes back as its own class (see
    `widths`).

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
        verify: Whether to check the result before returning it: both
            models run on one batch, and their outputs and every tensor
            inside that both hold must agree within
            `sqrt(eps) * (1 + max|value|)` of the least precise float dtype
            they compute in. With `threshold > 0` or `approximate=True` the
            difference is only measured. Defaults to `True`.
        round_to: Every resized layer keeps a multiple of this many units
            (or all of them) by keeping some dead ones, which is exact; wide
            vector units and GPUs can run such widths faster. Defaults to `1`
            (remove every dead unit; see `docs/benchmarks.md` for when
            rounding pays on this machine).
        benchmark: A batch size: the report then holds the measured
            latency of both models at that batch size on this machine
            (`SlimReport.latency`; implies `return_report`). Defaults to
            `None` (not measured).
        verify_inputs: The batch to verify on (an array, a list or a dict of
            arrays, as `model` takes them), e.g. to stay in the input range a
            model was trained on. Defaults to `None`: 8 random samples
            (standard normal floats; integer ids below the smallest Embedding
            vocabulary). Outputs are compared on the whole batch, the
            tensors inside the model on its first 2 samples.
        widths: For keras-hub models, whose class's config holds one
            feed-forward width for all transformer blocks: `"uniform"`
            returns the model's own class (backbone, preprocessor,
            `generate()`, presets), every block keeping the largest count
            of units any block keeps (the extra units are dead, so this is
            exact); `"per_layer"` returns a plain Functional model, each
            block at its own width. Where the class's config cannot hold the
            result (a layer outside the blocks loses units), a Functional
            model is returned with a warning. Defaults to `"uniform"`.

    Returns:
        The slim `keras.Model`, or `(model, report)` when `return_report`.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `threshold` not a number
            or a flag not a bool.
        ValueError: If `model` is subclassed or not built or holds NaN or
            infinite weights, `threshold` is negative, NaN or infinite, or a
            layer cannot be re-created from its config (`get_config()` fails).
        SlimVerificationError: A `ValueError` raised when verification finds
            that the slim model computes something else; it gives the
            deviation and the first layer that differs.

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
        ("verify", verify),
    ):
        checks.check_bool(name, value)
    round_to = checks.check_int("round_to", round_to, 1)
    checks.check_choice("widths", widths, hub_models.WIDTHS)
    if benchmark is not None:
        benchmark = checks.check_int("benchmark", benchmark, 1)
    graph = build_graph(model)
    if verify_inputs is not None:
        verify_inputs = batches.input_list(model, verify_inputs)
    with cached_values():  # every weight is converted to numpy once
        _check_finite_weights(graph)
        plan = make_plan(
            graph,
            threshold=float(threshold),
            drop_inputs=bool(drop_inputs),
            approximate=bool(approximate),
            round_to=round_to,
        )
    # The cache of every weight goes before the rebuild, which reads each once:
    # a model's worth of memory less at the peak.
    progress = None
    if len(graph.calls) >= _PROGRESS_MIN_CALLS and sys.stdout.isatty():
        progress = keras.utils.Progbar(len(graph.calls), verbose=1)
    copies = hub_models.LayerCopies(model) if hub_models.is_hub_model(model) else None
    slim, new_tensors = rebuild(
        plan, keep_regularizers=keep_regularizers, progress=progress, copies=copies
    )
    deviation = tolerance = None
    if verify or approximate:
        exact = threshold == 0 and not plan.inexact
        deviation, tolerance = verification.verify(
            plan, new_tensors, model, slim, verify_inputs, strict=bool(verify and exact)
        )
    if widths == "uniform" and hub_models.is_hub_model(model):
        # The verified Functional model goes before the class's model is built
        # (a model's worth of memory); it is built again only if that fails.
        del slim, new_tensors

        def per_layer():
            return rebuild(plan, keep_regularizers=keep_regularizers, copies=copies)[0]

        slim = _same_class(model, plan, per_layer, verify, verify_inputs)
    if not return_report and benchmark is None:
        return slim
    report = SlimReport.compare(
        model,
        slim,
        kept_inputs=plan.kept_inputs,
        max_deviation=deviation,
        tolerance=tolerance,
        latency=None if benchmark is None else latency.measure(plan, model, slim, benchmark),
        kept_whole=_kept_whole(plan),
    )
    return slim, report
