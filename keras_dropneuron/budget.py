"""Prune to a budget: the user names the target, the library finds the strength.

`BudgetCallback` adapts the strength of the DropNeuron penalties during `fit`
until the slim model that `slim_model` would build holds a given fraction of
the original model's multiply-adds, parameters or units. `prune_to_budget`
runs the whole job: it regularizes a copy, trains it to the budget, fine-tunes,
chooses the threshold with `choose_threshold`, slims, verifies and checks the
accuracy.

The strengths are scaled through one non-trainable variable that multiplies
the DropNeuron penalty of every weight while the callback runs, so a new
strength is a new value of that variable, not a new train step: nothing is
retraced when it changes (on JAX the value is passed to the jitted step as an
argument, see `keras_dropneuron._backend`).
"""

import contextlib
import dataclasses
import math
import numbers
import warnings

import keras
import numpy as np

from keras_dropneuron import (
    _backend,
    callbacks,
    checks,
    keras_internals,
    model_utils,
    pruning,
)
from keras_dropneuron.masking import NextFitGuard
from keras_dropneuron.model_utils import has_dropneuron_regularizer
from keras_dropneuron.regularize import regularize_model
from keras_dropneuron.regularizers import DROPNEURON_REGULARIZERS
from keras_dropneuron.surgery.report import SlimReport
from keras_dropneuron.surgery.size import SIZE_KINDS, size_ratios, slim_size_ratios
from keras_dropneuron.surgery.slim import slim_model
from keras_dropneuron.threshold import choose_threshold, default_score, default_thresholds

BUDGETS = SIZE_KINDS
_TARGET_ARGUMENTS = tuple(f"target_{kind}" for kind in BUDGETS)
ON_TARGET = ("hold", "release")


class BudgetError(ValueError):
    """The budget or the accuracy constraint could not be met.

    Attributes:
        ratios: What was reached: the `macs`, `params` and `units` ratios of
            the slim model (or of the model being trained), or `None`.
        model: The slim model that was built but not returned (it misses the
            accuracy constraint), or `None`.
        report: Its `BudgetReport`, or `None`.
    """

    def __init__(self, message, ratios=None, model=None, report=None):
        super().__init__(message)
        self.ratios = ratios
        self.model = model
        self.report = report


def check_target(caller, **targets):
    """Returns `(budget, fraction)` from exactly one `target_<budget>=fraction`.

    Args:
        caller: The function or class checked, for the message of a keyword
            that is not a target at all.
        **targets: `target_macs`, `target_params`, `target_units`; exactly
            one must not be `None`.

    Returns:
        `("macs" | "params" | "units", fraction)` with `0 < fraction <= 1`.

    Raises:
        TypeError: For an unknown budget keyword or a fraction that is not a
            number.
        ValueError: If none or several targets are given, or the fraction is
            not in (0, 1] (0, negative, above 1, NaN, infinite).
    """
    unknown = sorted(set(targets) - set(_TARGET_ARGUMENTS))
    for name in unknown:
        if not name.startswith("target_"):
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if unknown:
        raise TypeError(
            f"Unknown kind of budget: {', '.join(unknown)}. Expected one of "
            f"{', '.join(_TARGET_ARGUMENTS)} (multiply-adds, parameters, units)."
        )
    given = {name: value for name, value in targets.items() if value is not None}
    if len(given) != 1:
        raise ValueError(
            f"Expected exactly one of {', '.join(_TARGET_ARGUMENTS)}. Received: {given or 'none'}"
        )
    ((name, value),) = given.items()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise checks.invalid_type(name, "a float in (0, 1]", value)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise checks.invalid_value(
            name, "a fraction of the original model in (0, 1], e.g. 0.5", value
        )
    return name[len("target_") :], float(value)


def penalized_variables(model):
    """The weights of `model` whose regularizer is a DropNeuron penalty, each once."""
    found = {}
    for variable in model.weights:
        if isinstance(getattr(variable, "regularizer", None), DROPNEURON_REGULARIZERS):
            found[id(variable)] = variable
    return list(found.values())


def _smallest(candidates, ok):
    """The smallest of the sorted `candidates` with `ok(c)` (monotone: false, then true)."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if ok(candidates[middle]):
            best, high = candidates[middle], middle - 1
        else:
            low = middle + 1
    return best


def _largest(candidates, ok):
    """The largest of the sorted `candidates` with `ok(c)` (monotone: true, then false)."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if ok(candidates[middle]):
            best, low = candidates[middle], middle + 1
        else:
            high = middle - 1
    return best


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class BudgetCallback(callbacks.PruneCallback):
    """Adapts the penalty strengths during `fit` until the slim model meets a budget.

    Give one target: `target_macs`, `target_params` or `target_units`, the
    fraction of the original model's multiply-adds, parameters or units
    (of the supported layers) that the slim model (`slim_model`) may keep.
    The model must carry DropNeuron penalties (`regularize_model`, or
    `LiRegularizer` / `LoRegularizer` / `DropNeuronRegularizer` attached by
    hand); while it runs, the callback multiplies each of these penalties
    (the whole regularizer, its `l1` and `l2` terms included) by one scale, a
    variable, starting at `initial_scale` (the strengths you set are the
    unit), and prunes like `PruneCallback` (it is one).

    The controller, at every pruning event (after `warmup_epochs`; by
    default at the end of every epoch, with `frequency=n` after every `n`
    training batches):

    1. Measures the look-ahead fraction `ahead`: what the slim model would
       keep if pruned at `lookahead * threshold` (the units the penalty is
       about to kill). Every fraction is measured on the model the surgeon
       would build from the pruned weights (its plan, rebuilt and counted),
       not estimated.
    2. If pruning at some threshold up to `lookahead * threshold` meets the
       target, it prunes at the smallest such threshold (of sixteenths of
       `threshold` and 16 geometric steps above it), which keeps the most
       that fits the budget. Otherwise it prunes at `threshold`, or at the
       largest sixteenth of it that keeps at least `target * (1 - tolerance)`.
       A threshold that would empty a layer is never used (as in
       `PruneCallback`).
    3. If the slim model now keeps at most `target`, the target is reached:
       pruning stops (the masks keep the pruned weights at zero) and the
       scale is held (`on_target="hold"`) or set to 0 (`"release"`, to
       fine-tune the survivors without penalties); with
       `stop_on_target=True` training stops. If instead the budget would
       empty a layer, the penalty is crushing it: the scale is divided by
       `growth`.
    4. Otherwise the scale follows a schedule: to reach the target by
       the end of epoch `target_epoch` (default: 60% of the `fit`'s
       epochs), the look-ahead fraction must fall by `needed = log(ahead /
       target) / events_left` per event (in log terms). If it fell by less
       than `needed / 2` since the last event the scale is multiplied by
       `growth` (by `growth ** 2` if it did not fall at all); by more than
       `2 * needed` with two events or more to go, divided by it; else
       held. It pushes harder only
       when behind schedule, and eases off when the penalty kills units
       faster than needed (group lasso acts with a lag).

    A model that already meets the target when training starts is reached at
    once. A target below the smallest model the surgeon can build with one
    unit left in every pruned layer is refused when training starts, with a
    `BudgetError` that gives that smallest fraction. A `fit` that ends before
    the target gives a warning.

    At the end of every epoch `logs` gets `macs_ratio`, `params_ratio`,
    `units_ratio` (fractions the slim model would keep), `<budget>_ratio_ahead`
    (the look-ahead fraction of the budget's kind), `penalty_scale` (the
    current multiplier of the strengths), `budget_reached` (0 or 1) and
    `PruneCallback`'s `sparsity` and `alive_units`, so the progress bar,
    `History`, `CSVLogger` and `TensorBoard` show them (place the callback
    before the last two).

    When training ends every weight gets its own regularizer back, unscaled:
    the regularizers' strengths and `get_config()` never change (the scale
    wraps `variable.regularizer`, which Keras calls in the train step). `scale` holds the final
    multiplier, `reached_epoch` the epoch the target was reached (or `None`,
    `-1` when reached at the start), `ratios` the last measured fractions.

    Args:
        target_macs: Fraction of the multiply-adds to keep, in (0, 1].
        target_params: Fraction of the parameters to keep, in (0, 1].
        target_units: Fraction of the units of the supported layers to keep,
            in (0, 1].
        threshold: Pruning threshold, as in `PruneCallback`. Defaults to `1e-2`.
        initial_scale: Multiplier of the strengths at the start, a float > 0.
            Defaults to `1.0`.
        growth: Factor by which the scale grows when behind schedule, a
            float > 1. Defaults to `1.5`.
        lookahead: The look-ahead threshold, as a multiple of `threshold`,
            a float >= 1. Defaults to `10.0`.
        tolerance: How far below the target pruning at `threshold` may
            land, as a fraction of the target, in [0, 1). Defaults to `0.1`.
        on_target: `"hold"` or `"release"` (see above). Defaults to `"hold"`.
        stop_on_target: Whether to stop training once the target is
            reached. Defaults to `False`.
        target_epoch: The epoch count by which the controller plans to reach
            the target, an int >= 1. Defaults to `None`: 60% of the `fit`'s
            `epochs` (rounded), leaving the rest as a margin.
        frequency: `"epoch"`, or an int `n`: a controller event after every
            `n` training batches, for finer control when epochs are few and
            long (each event builds the surgeon's plan a few times).
            Defaults to `"epoch"`.
        mode: Pruning mode, as in `PruneCallback`. Defaults to `"neuron"`:
            whole incoming or outgoing groups whose norm is below `threshold`,
            which removes units without thinning the survivors.
        layers: Layers to prune, as in `PruneCallback`. Defaults to `None`.
        warmup_epochs: Epochs before the first pruning event. Defaults to `0`.

    Raises:
        TypeError, ValueError: On invalid arguments, e.g. a target of 0,
            above 1 or NaN, none or two targets, or an unknown
            `target_<kind>` (`TypeError`); when training starts, for a model
            without DropNeuron penalties.
        BudgetError: When training starts, for a target that needs a layer
            emptied.

    Example:

    >>> model = regularize_model(model, li=1e-4, lo=1e-4)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> model.fit(x, y, epochs=10, callbacks=[BudgetCallback(target_macs=0.5)])
    """

    def __init__(
        self,
        target_macs=None,
        target_params=None,
        target_units=None,
        threshold=1e-2,
        initial_scale=1.0,
        growth=1.5,
        lookahead=10.0,
        tolerance=0.1,
        on_target="hold",
        stop_on_target=False,
        target_epoch=None,
        frequency="epoch",
        mode="neuron",
        layers=None,
        warmup_epochs=0,
        **unknown,
    ):
        self.budget, self.target = check_target(
            "BudgetCallback",
            target_macs=target_macs,
            target_params=target_params,
            target_units=target_units,
            **unknown,
        )
        super().__init__(
            threshold=threshold,
            frequency=frequency,
            mode=mode,
            layers=layers,
            warmup_epochs=warmup_epochs,
        )
        self.initial_scale = checks.check_non_negative_float("initial_scale", initial_scale)
        if self.initial_scale == 0:
            raise checks.invalid_value("initial_scale", "a finite float > 0", initial_scale)
        self.growth = checks.check_non_negative_float("growth", growth)
        if self.growth <= 1:
            raise checks.invalid_value("growth", "a finite float > 1", growth)
        self.lookahead = checks.check_non_negative_float("lookahead", lookahead)
        if self.lookahead < 1:
            raise checks.invalid_value("lookahead", "a finite float >= 1", lookahead)
        self.tolerance = checks.check_non_negative_float("tolerance", tolerance)
        if self.tolerance >= 1:
            raise checks.invalid_value("tolerance", "a float in [0, 1)", tolerance)
        self.on_target = checks.check_choice("on_target", on_target, ON_TARGET)
        self.stop_on_target = checks.check_bool("stop_on_target", stop_on_target)
        if target_epoch is not None:
            target_epoch = checks.check_int("target_epoch", target_epoch, 1)
        self.target_epoch = target_epoch
        self.scale = self.initial_scale
        self.reached_epoch = None
        self.scale_at_target = None
        self.ratios = {}
        self._scaled = []
        self._scale_variable = None
        self._scale_hook = None
        self._scale_guard = None
        self._previous = None

    @property
    def reached(self):
        """Whether the target was reached in the last `fit`."""
        return self.reached_epoch is not None

    def get_config(self):
        config = {name: None for name in _TARGET_ARGUMENTS}
        config[f"target_{self.budget}"] = self.target
        config.update(super().get_config())
        # Not an argument here: the controller needs refused events to see a layer emptied.
        config.pop("keep_last_unit", None)
        config.update(
            initial_scale=self.initial_scale,
            growth=self.growth,
            lookahead=self.lookahead,
            tolerance=self.tolerance,
            on_target=self.on_target,
            stop_on_target=self.stop_on_target,
            target_epoch=self.target_epoch,
        )
        return config

    # -- training hooks -------------------------------------------------------------

    def on_train_begin(self, logs=None):
        penalized = penalized_variables(self.model) if self.model is not None else []
        if not penalized:
            checks.check_model("model", self.model)
            raise ValueError(
                f"BudgetCallback found no DropNeuron penalty in model {self.model.name!r}: "
                "it adapts their strengths. Use `regularize_model(model, li=..., lo=...)` "
                "or attach LiRegularizer / LoRegularizer / DropNeuronRegularizer."
            )
        super().on_train_begin(logs)
        self.scale = self.initial_scale
        self.reached_epoch = None
        self._attach_scale(penalized)
        self._check_reachable()
        self.ratios = slim_size_ratios(self.model)
        kept = self.ratios[self.budget]
        self._previous = kept
        if kept <= self.target:
            self._reach(-1)

    def on_train_batch_end(self, batch, logs=None):
        if self._schedule.batch_event(batch, (self.params or {}).get("steps")):
            if not self.reached:
                self._budget_event(self._schedule.epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self._schedule.epoch_event() and not self.reached:
            self._budget_event(epoch)
        if logs is not None:
            logs.update(self.figures())

    def on_train_end(self, logs=None):
        if not self.reached:
            warnings.warn(
                f"BudgetCallback: target_{self.budget}={self.target:g} not reached in this "
                f"fit: the slim model would keep {self.ratios.get(self.budget, 1.0):.4g} "
                f"(penalty scale {self.scale:.4g}). Train longer or raise `growth`.",
                stacklevel=2,
            )
        super().on_train_end(logs)

    def figures(self):
        """The figures written to `logs` (see the class docstring)."""
        figures = super().figures()
        for kind in BUDGETS:
            figures[f"{kind}_ratio"] = self.ratios.get(kind, 1.0)
        figures[f"{self.budget}_ratio_ahead"] = self.ratios.get("lookahead", 1.0)
        figures["penalty_scale"] = self.scale
        figures["budget_reached"] = int(self.reached)
        return figures

    # -- the controller -------------------------------------------------------------

    def _budget_event(self, epoch, batch=None):
        values = self._weight_masks.values()
        trials = {}

        def kept_at(threshold):  # -1: pruning there would empty a layer
            if threshold not in trials:
                try:
                    keeps = self._weight_masks.keep_masks(values, threshold)
                except pruning.UnitsWouldVanishError:
                    trials[threshold] = (-1.0, None, None)
                else:
                    self._assign(values, keeps)
                    ratios = slim_size_ratios(self.model)
                    trials[threshold] = (ratios[self.budget], keeps, ratios)
            return trials[threshold][0]

        # Sixteenths of `threshold`, then 16 geometric steps up to the look-ahead.
        candidates = [self.threshold * i / 16 for i in range(1, 17)]
        candidates += np.geomspace(self.threshold, self.threshold * self.lookahead, 17)[
            1:
        ].tolist()
        try:
            ahead = kept_at(candidates[-1])
            cut = _smallest(candidates, lambda t: kept_at(t) <= self.target)
            if cut is not None and kept_at(cut) >= 0:
                chosen = cut  # the budget is within reach: cut exactly there
            else:
                below = [t for t in candidates if t <= self.threshold and (cut is None or t < cut)]
                floor = self.target * (1 - self.tolerance)
                chosen = _largest(below, lambda t: kept_at(t) >= floor)
            if chosen is None:
                self._assign(values, [value != 0 for value in values])
                ratios = slim_size_ratios(self.model)
            else:
                _, keeps, ratios = trials[chosen]
                self._assign(values, keeps, masks=True)
        except Exception:
            self._release()
            raise
        self.ratios = dict(ratios, lookahead=ahead)
        kept = ratios[self.budget]
        previous_ahead = self._previous
        self._previous = ahead if ahead > 0 else kept
        if kept <= self.target:
            self._reach(epoch)
        elif ahead < 0 or (cut is not None and kept_at(cut) < 0):
            # The budget would empty a layer at the look-ahead: the penalty is crushing it.
            self._set_scale(self.scale / self.growth)
        else:
            params = self.params or {}
            epochs = self.target_epoch or max(1, round(0.6 * params.get("epochs", epoch + 2)))
            left = epochs - (epoch + 1)  # events left, in epochs
            if batch is not None:
                steps = params.get("steps") or batch + 1
                left = (left + 1 - (batch + 1) / steps) * steps / self.frequency
            needed = math.log(ahead / self.target) / max(1.0, left)
            progress = math.log(previous_ahead / ahead)
            if progress < needed / 2:
                # Nothing moved at all: the strength is still far too weak, search faster.
                factor = self.growth**2 if progress <= 0 else self.growth
                self._set_scale(self.scale * factor)
            elif progress > 2 * needed and left >= 2:
                self._set_scale(self.scale / self.growth)

    def _assign(self, values, keeps, masks=False):
        self._weight_masks.assign(values, keeps, masks=masks)

    def _check_reachable(self):
        """Refuses a target below the smallest slim model: one unit in every layer.

        Every managed weight keeps only its first output unit (for a moment:
        the weights are restored), and the surgeon's plan of that model is
        counted. A smaller target would need a layer emptied.
        """
        values = self._weight_masks.values()
        keeps = []
        for (_, layout, _), value in zip(self._weight_masks.weights, values, strict=True):
            keep = np.zeros(value.shape, dtype=bool)
            first = [slice(None)] * value.ndim
            for axis in layout.output_axes:
                first[axis] = 0
            keep[tuple(first)] = True
            keeps.append(keep)
        try:
            self._assign(values, keeps)
            smallest = slim_size_ratios(self.model)
        finally:
            self._assign(values, [np.ones(value.shape, dtype=bool) for value in values])
        if smallest[self.budget] > self.target:
            self._release()
            raise BudgetError(
                f"target_{self.budget}={self.target:g} cannot be reached without emptying a "
                f"layer: the smallest model the surgeon can build, one unit left in every "
                f"pruned layer, keeps {smallest[self.budget]:.4g} of the {self.budget} "
                f"(inputs, outputs and layers kept whole stay). Choose a target of at least "
                f"{smallest[self.budget]:.4g}, or let more layers be pruned.",
                ratios=smallest,
            )

    def _reach(self, epoch):
        self.reached_epoch = epoch
        self.scale_at_target = self.scale
        if self.on_target == "release":
            self._set_scale(0.0)
        if self.stop_on_target and self.model is not None:
            self.model.stop_training = True

    def _set_scale(self, scale):
        self.scale = float(scale)
        if self._scale_variable is not None:
            self._scale_variable.assign(self.scale)

    # -- the scale on the regularizers ----------------------------------------------

    def _attach_scale(self, penalized):
        strategy = getattr(self.model, "distribute_strategy", None)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self._scale_variable = keras.Variable(
                self.scale, dtype="float32", trainable=False, name="dropneuron_penalty_scale"
            )
        # Keras computes a weight's penalty as `variable.regularizer(value)` in the
        # train step; the layers' own regularizer attributes and configs stay as they are.
        self._scaled = [(variable, variable.regularizer) for variable in penalized]
        for variable, regularizer in self._scaled:
            variable.regularizer = _ScaledPenalty(regularizer, self._scale_variable)
        if _backend.backend() == "jax":
            self._scale_hook = _ScaleHook(self._scale_variable)
            _backend.add_step_hook(self.model, self._scale_hook)
        # A fit that raises leaves the scale on: the next training call takes it off first.
        self._scale_guard = NextFitGuard(self._detach_scale, self.model)

    def _detach_scale(self):
        if self._scale_guard is not None:
            self._scale_guard.unlink()
            self._scale_guard = None
        for variable, regularizer in reversed(self._scaled):
            variable.regularizer = regularizer
        self._scaled = []
        if self._scale_hook is not None:
            _backend.remove_step_hook(self.model, self._scale_hook)
            self._scale_hook = None

    def _release(self):
        self._detach_scale()
        super()._release()  # retraces without the scale (TensorFlow, PyTorch)


class _ScaledPenalty:
    """A weight's DropNeuron penalty times the callback's scale (a variable)."""

    def __init__(self, regularizer, scale):
        self.regularizer = regularizer
        self.scale = scale

    def __call__(self, x):
        penalty = self.regularizer(x)
        return penalty * keras.ops.cast(self.scale, penalty.dtype)


class _ScaleHook(_backend.StepHook):
    """JAX: the scale variable's value is an argument of the jitted step."""

    def __init__(self, variable):
        self.variable = variable

    def inputs(self):
        return [self.variable.value]

    def bind(self, inputs):
        return keras_internals.bound_value(self.variable, inputs[0])

    def apply(self, trainable, optimizer_values, inputs):
        return trainable


@dataclasses.dataclass
class BudgetReport:
    """What `prune_to_budget` reached.

    Attributes:
        budget: `"macs"`, `"params"` or `"units"`.
        target: The fraction asked for.
        ratios: The fractions the slim model keeps, counted on the verified
            slim model: `macs`, `params`, `units`.
        error_before: Validation error of the original model (the score:
            error rate for class scores, else mean squared error).
        error_after: Validation error of the slim model.
        threshold: The threshold `choose_threshold` chose after fine-tuning.
        epochs_to_target: Epochs of penalized training until the target.
        penalty_scale: The multiplier of the strengths when it was reached.
        slim_report: The `SlimReport` of `slim_model`.
    """

    budget: str
    target: float
    ratios: dict
    error_before: float
    error_after: float
    threshold: float
    epochs_to_target: int
    penalty_scale: float
    slim_report: SlimReport

    @property
    def accuracy_drop(self):
        """`error_after - error_before` (for class scores, accuracy points lost)."""
        return self.error_after - self.error_before

    def __str__(self):
        return "\n".join(
            [
                f"Budget: target_{self.budget}={self.target:g}; the slim model keeps "
                f"{self.ratios['macs']:.1%} of the multiply-adds, "
                f"{self.ratios['params']:.1%} of the parameters, "
                f"{self.ratios['units']:.1%} of the units (verified)",
                f"Validation error: {self.error_before:.4g} -> {self.error_after:.4g} "
                f"(drop {self.accuracy_drop:+.4g})",
                f"Reached after {self.epochs_to_target} epochs at penalty scale "
                f"{self.penalty_scale:.3g}; threshold {self.threshold:g}",
                str(self.slim_report),
            ]
        )

    __repr__ = __str__


def _check_pair(name, data, model):
    """`(x, y)` as numpy arrays, checked against each other and the model's input."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data)
    try:
        x, y = (np.asarray(a) for a in data)
    except (TypeError, ValueError) as error:
        raise checks.invalid_type(name, "a tuple (x, y) of arrays", data) from error
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected x and y with one entry per "
            f"sample. Received: x of shape {x.shape} and y of shape {y.shape}"
        )
    for label, array in (("x", x), ("y", y)):
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            raise ValueError(
                f"Invalid value for argument `{name}`: expected finite values. "
                f"Received: {label} with NaN or infinite entries"
            )
    expected = input_mismatch(model, x)
    if expected:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected x of shape {expected} for the "
            f"model's input. Received: x of shape {x.shape}"
        )
    return x, y


def input_mismatch(model, x):
    """The input shape a single-input `model` expects, as text, when `x` does not fit it."""
    if len(model.inputs) != 1:
        return None
    expected = tuple(model.inputs[0].shape[1:])
    fits = len(expected) == x.ndim - 1 and all(
        e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
    )
    return None if fits else "(" + ", ".join(["n", *map(str, expected)]) + ")"


def _score(model, x, y, batch_size):
    return default_score(y, model.predict(x, batch_size=batch_size, verbose=0))


def prune_to_budget(
    model,
    train_data,
    val_data,
    *,
    target_macs=None,
    target_params=None,
    target_units=None,
    max_accuracy_drop=0.005,
    epochs=10,
    finetune_epochs=2,
    li=4e-4,
    lo=4e-4,
    threshold=1e-2,
    growth=1.5,
    tolerance=0.1,
    frequency="epoch",
    batch_size=128,
    optimizer=None,
    loss=None,
    callbacks=None,
    verbose=0,
    **unknown,
):
    """Prunes `model` to a budget and returns the slim, verified model.

    1. Copies `model`: as it is when it carries DropNeuron penalties (yours,
       attached by hand), else through `regularize_model(model, li, lo)`.
    2. Trains the copy with `BudgetCallback` until the slim model would keep
       at most the target (at most `epochs` epochs), then `finetune_epochs`
       without penalties, the pruned weights held at zero.
    3. Chooses a threshold with `choose_threshold` on `val_data` (loses
       nothing there), among those that keep the budget within `tolerance`.
    4. Builds the slim model with `slim_model` (verified to compute what the
       pruned copy computes) and counts its budget on it.
    5. Checks the validation error against the original model's.

    Args:
        model: A Sequential or Functional model (trained or not); never
            modified.
        train_data: `(x, y)` arrays to train on.
        val_data: `(x, y)` arrays for the threshold and the accuracy check.
        target_macs, target_params, target_units: Exactly one: the fraction
            of the multiply-adds, parameters or units to keep, in (0, 1].
        max_accuracy_drop: Largest allowed increase of the validation error
            (a fraction: 0.005 is half a point of accuracy; for a model whose
            outputs are not class scores, of the mean squared error).
            Defaults to `0.005`.
        epochs: Most epochs of penalized training. Defaults to `10`.
        finetune_epochs: Epochs without penalties after the target is
            reached. Defaults to `2`.
        li, lo: Base strengths given to `regularize_model` (the controller
            scales them). Defaults to `4e-4`.
        threshold: Pruning threshold during training. Defaults to `1e-2`.
        growth, tolerance, frequency: See `BudgetCallback`. Defaults to
            `1.5`, `0.1`, `"epoch"`.
        batch_size: Training batch size. Defaults to `128`.
        optimizer, loss: How to compile the copy. Defaults to `None`: the
            model's own compile configuration (a fresh optimizer), or
            `"adam"`; a model that is not compiled needs `loss`.
        callbacks: More callbacks for both `fit`s (after the budget's own,
            so `CSVLogger` and `TensorBoard` see its figures). Defaults to
            `None`.
        verbose: Passed to `fit`. Defaults to `0`.

    Returns:
        `(slim_model, BudgetReport)`.

    Raises:
        TypeError, ValueError: On invalid arguments (a target of 0, above 1,
            NaN, none or two targets, or an unknown `target_<kind>`).
        BudgetError: A `ValueError` when the budget is not reached in
            `epochs`, needs a layer emptied, or costs more than
            `max_accuracy_drop`; it says what was reached and carries the
            slim model and report when one was built.

    Example:

    >>> slim, report = prune_to_budget(model, (x, y), (x_val, y_val), target_macs=0.5)
    >>> print(report)
    """
    budget, target = check_target(
        "prune_to_budget",
        target_macs=target_macs,
        target_params=target_params,
        target_units=target_units,
        **unknown,
    )
    checks.check_model("model", model)
    x, y = _check_pair("train_data", train_data, model)
    x_val, y_val = _check_pair("val_data", val_data, model)
    max_drop = checks.check_non_negative_float("max_accuracy_drop", max_accuracy_drop)
    epochs = checks.check_int("epochs", epochs, 1)
    finetune_epochs = checks.check_int("finetune_epochs", finetune_epochs, 0)
    batch_size = checks.check_int("batch_size", batch_size, 1)
    li = checks.check_non_negative_float("li", li)
    lo = checks.check_non_negative_float("lo", lo)
    name = f"target_{budget}"
    callback_args = {name: target, "threshold": threshold, "growth": growth}
    callback_args.update(tolerance=tolerance, frequency=frequency)
    BudgetCallback(**callback_args)  # checks them before any training
    copy = _penalized_copy(model, li, lo)
    _compile_like(copy, model, optimizer, loss)

    error_before = _score(model, x_val, y_val, batch_size)
    train = BudgetCallback(**callback_args, on_target="release", stop_on_target=True)
    extra = list(callbacks or [])
    history = copy.fit(
        x, y, epochs=epochs, batch_size=batch_size, callbacks=[train, *extra], verbose=verbose
    )
    if not train.reached:
        raise BudgetError(
            f"{name}={target:g} not reached in {epochs} epochs: the slim model would keep "
            f"{train.ratios[budget]:.4g} of the {budget} (penalty scale {train.scale:.3g}). "
            "Train longer (`epochs=`), start stronger (`li=`, `lo=`) or relax the target.",
            ratios=dict(train.ratios),
        )
    epochs_to_target = len(history.epoch)
    penalty_scale = train.scale_at_target
    if finetune_epochs:
        hold = BudgetCallback(**callback_args, on_target="release")
        copy.fit(
            x,
            y,
            epochs=finetune_epochs,
            batch_size=batch_size,
            callbacks=[hold, *extra],
            verbose=verbose,
        )
    chosen = _choose_threshold(copy, x_val, y_val, budget, target * (1 - tolerance), batch_size)
    slim, slim_report = slim_model(copy, keep_regularizers=False, return_report=True)
    ratios = size_ratios(slim_report, copy)
    report = BudgetReport(
        budget=budget,
        target=target,
        ratios=ratios,
        error_before=error_before,
        error_after=_score(slim, x_val, y_val, batch_size),
        threshold=chosen,
        epochs_to_target=epochs_to_target,
        penalty_scale=penalty_scale,
        slim_report=slim_report,
    )
    if report.accuracy_drop > max_drop:
        raise BudgetError(
            f"{name}={target:g} was reached (the verified slim model keeps "
            f"{ratios[budget]:.4g} of the {budget}) but the validation error rose from "
            f"{report.error_before:.4g} to {report.error_after:.4g} "
            f"(+{report.accuracy_drop:.4g}), "
            f"more than max_accuracy_drop={max_drop:g}. Nothing is returned: train or "
            "fine-tune longer, or relax the budget. The slim model is on this error's "
            "`.model`, its report on `.report`.",
            ratios=ratios,
            model=slim,
            report=report,
        )
    return slim, report


def _penalized_copy(model, li, lo):
    """A copy of `model` that carries DropNeuron penalties (the user's, or Li+Lo)."""
    layers = model_utils.select_layers(model)
    model_utils.check_has_supported_layers(model, layers)
    if any(has_dropneuron_regularizer(layer) for layer in layers):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    if not li and not lo:
        raise ValueError(
            "Invalid value for arguments `li` and `lo`: expected at least one > 0 when the "
            "model carries no DropNeuron penalty. Received: li=0.0, lo=0.0"
        )
    return regularize_model(model, li=li, lo=lo)


def _compile_like(copy, model, optimizer, loss):
    """Compiles `copy` as `model` is (a fresh optimizer), with `optimizer`/`loss` overriding."""
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if config:
        copy.compile_from_config(config)
        if optimizer is None and loss is None:
            return
        optimizer = optimizer or copy.optimizer
        loss = loss or copy.loss
    if loss is None:
        raise ValueError(
            "Invalid value for argument `loss`: the model is not compiled, so prune_to_budget "
            "needs the loss to train it with. Received: loss=None"
        )
    copy.compile(optimizer=optimizer or "adam", loss=loss)


def _choose_threshold(copy, x_val, y_val, budget, floor, batch_size):
    """`choose_threshold` among the thresholds that keep the budget above `floor`; prunes."""
    grid = default_thresholds()
    trial = keras.models.clone_model(copy)
    weights = copy.get_weights()

    def keeps_budget(threshold):
        trial.set_weights(weights)
        try:
            pruning.prune_weights(trial, threshold)
        except pruning.UnitsWouldVanishError:
            return False
        return slim_size_ratios(trial)[budget] >= floor

    largest = _largest(grid, keeps_budget)
    if largest is None:
        return 0.0
    chosen, _ = choose_threshold(
        copy, x_val, y_val, thresholds=[t for t in grid if t <= largest], batch_size=batch_size
    )
    if chosen:
        pruning.prune_weights(copy, chosen)
    return chosen
