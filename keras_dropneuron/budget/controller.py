"""The budget controller: `BudgetCallback` adapts the penalties' strength during `fit`.

It prunes like `PruneCallback` (it is one) and, at every pruning event,
measures what the slim model would keep, prunes at the threshold that best
fits the budget and steers one scale of the DropNeuron penalties
(`penalty_scale.PenaltyScale`) towards the target.
"""

import math
import warnings

import keras

from keras_dropneuron import checks
from keras_dropneuron.budget import gradual, penalty_cut
from keras_dropneuron.budget.loss_guard import LossGuard
from keras_dropneuron.budget.penalty_scale import PenaltyScale, penalized_variables
from keras_dropneuron.budget.targets import BUDGETS, TARGET_ARGUMENTS, BudgetError, check_target
from keras_dropneuron.budget.thresholds import (
    PruningTrials,
    candidate_thresholds,
    one_unit_ratios,
)
from keras_dropneuron.callbacks import PruneCallback
from keras_dropneuron.surgery.size import slim_size_ratios

ON_TARGET = ("hold", "release")
SCHEDULES = ("penalty", "gradual", "auto")


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class BudgetCallback(PruneCallback):
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
       target, this is the final cut: it prunes at the largest of these
       thresholds (sixteenths of `threshold` and 16 geometric steps above
       it) that keeps more than the target, then cuts the weakest units one
       by one (`ranking.UnitRanking`) until the slim model keeps at most the
       target, so it lands within about one unit of it. Otherwise it prunes
       at `threshold`, or at the largest sixteenth of it that keeps at least
       `target * (1 - tolerance)`.
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
    5. The guard: with `guard_data`, the data loss there (the compiled
       loss, no penalty) is measured at every epoch end. While
       it stands more than `loss_guard` times its lowest value above that
       value, the scale is divided by `growth` at each event instead of
       following the schedule.

    With `schedule="gradual"`, for a model that is already trained, the
    penalties stay at `initial_scale` and the events cut instead: each
    prunes at `threshold`, then cuts the weakest units (by the magnitude
    of their incoming group, with BatchNormalization's `gamma` and `beta`,
    over their layer's mean) until the slim model keeps at most a
    scheduled fraction, which falls from the size at the start to the target
    by `target_epoch`, fast first and slowly last (cubic, after Zhu and
    Gupta 2017). While the guard objects, an event cuts nothing. It ranks
    the units of Dense, Conv and recurrent layers and attention heads; a
    target that cutting all of them (one left in each layer) cannot reach
    is refused when training starts.

    A model that already meets the target when training starts is reached at
    once. A target below the smallest model the surgeon can build with one
    unit left in every pruned layer is refused when training starts, with a
    `BudgetError` that gives that smallest fraction. A `fit` that ends before
    the target gives a warning.

    At the end of every epoch `logs` gets `macs_ratio`, `params_ratio`,
    `units_ratio` (fractions the slim model would keep), `<budget>_ratio_ahead`
    (the look-ahead fraction of the budget's kind), `penalty_scale` (the
    current multiplier of the strengths), `budget_reached` (0 or 1),
    `data_loss` (the guard's data loss; NaN without `guard_data`),
    `backing_off` (1 while the guard objects) and
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
            land, as a fraction of the target, in [0, 1). Defaults to `0.03`.
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
        schedule: `"penalty"` (the scale steers the penalties until units
            die), `"gradual"` (the weakest units are cut on a schedule; for
            trained models) or `"auto"` (`"gradual"` where cutting the ranked
            units can reach the target, else `"penalty"`;
            `active_schedule` says which, once training started). Defaults
            to `"penalty"`.
        loss_guard: How far the data loss on `guard_data` may rise above
            its lowest value in this `fit`, as a fraction of that value,
            before the controller eases off: a float > 0, or `None` for no
            guard. Defaults to `1.0`.
        guard_data: `(x, y)` arrays (validation data) on which the guard
            measures the data loss at every epoch end: the model's compiled
            loss, without penalties. Defaults to `None`: no guard. Not part
            of `get_config()`.

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
        target_macs: float | None = None,
        target_params: float | None = None,
        target_units: float | None = None,
        threshold: float = 1e-2,
        initial_scale: float = 1.0,
        growth: float = 1.5,
        lookahead: float = 10.0,
        tolerance: float = 0.03,
        on_target: str = "hold",
        stop_on_target: bool = False,
        target_epoch: int | None = None,
        frequency: str | int = "epoch",
        mode: str = "neuron",
        layers: list[str] | None = None,
        warmup_epochs: int = 0,
        schedule: str = "penalty",
        loss_guard: float | None = 1.0,
        guard_data: tuple | None = None,
        **unknown: float | None,
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
        self.initial_scale = _check_above("initial_scale", initial_scale, 0, "> 0")
        self.growth = _check_above("growth", growth, 1, "> 1")
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
        self.schedule = checks.check_choice("schedule", schedule, SCHEDULES)
        # What `"auto"` resolves to when training starts.
        self.active_schedule = "penalty" if schedule == "auto" else schedule
        if loss_guard is not None:
            loss_guard = _check_above("loss_guard", loss_guard, 0, "> 0, or None")
        self.loss_guard = loss_guard
        if guard_data is not None and (not isinstance(guard_data, tuple) or len(guard_data) != 2):
            raise TypeError(
                "Invalid value for argument `guard_data`: expected a tuple (x, y) of arrays, or "
                f"None. Received: a {type(guard_data).__name__}"
                + (f" of length {len(guard_data)}" if isinstance(guard_data, tuple) else "")
            )
        self._loss_guard = LossGuard(loss_guard, guard_data)
        self._start_kept = 1.0
        self._events_total = None
        self.scale = self.initial_scale
        self.reached_epoch = None
        self.scale_at_target = None
        self.ratios = {}
        self._penalty_scale = None
        self._previous = None

    @property
    def reached(self) -> bool:
        """Whether the target was reached in the last `fit`."""
        return self.reached_epoch is not None

    def get_config(self) -> dict:
        config = {name: None for name in TARGET_ARGUMENTS}
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
            schedule=self.schedule,
            loss_guard=self.loss_guard,
        )
        return config

    # -- training hooks -------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
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
        self._penalty_scale = PenaltyScale(self.model)
        self._penalty_scale.attach(penalized, self.scale)
        self._loss_guard.reset()
        self._events_total = None
        self._check_reachable()
        self.ratios = slim_size_ratios(self.model)
        kept = self.ratios[self.budget]
        self._previous = self._start_kept = kept
        if kept <= self.target:
            self._reach(-1)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._schedule.batch_event(batch, (self.params or {}).get("steps")):
            if not self.reached:
                self._budget_event(self._schedule.epoch, batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._loss_guard.update(self.model)
        if self._schedule.epoch_event() and not self.reached:
            self._budget_event(epoch)
        if logs is not None:
            logs.update(self.figures())

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.reached:
            warnings.warn(
                f"BudgetCallback: target_{self.budget}={self.target:g} not reached in this "
                f"fit: the slim model would keep {self.ratios.get(self.budget, 1.0):.4g} "
                f"(penalty scale {self.scale:.4g}). Train longer or raise `growth`.",
                stacklevel=2,
            )
        super().on_train_end(logs)

    def figures(self) -> dict:
        """The figures written to `logs` (see the class docstring)."""
        figures = super().figures()
        for kind in BUDGETS:
            figures[f"{kind}_ratio"] = self.ratios.get(kind, 1.0)
        figures[f"{self.budget}_ratio_ahead"] = self.ratios.get("lookahead", 1.0)
        figures["penalty_scale"] = self.scale
        figures["budget_reached"] = int(self.reached)
        figures["data_loss"] = self._loss_guard.data_loss
        figures["backing_off"] = int(self._loss_guard.departed)
        return figures

    # -- the controller -------------------------------------------------------------

    def _budget_event(self, epoch: int, batch: int | None = None) -> None:
        """One event: choose the cut, prune there, then update the scale."""
        trials = PruningTrials(self._weight_masks, self._weight_masks.values(), self.budget)
        try:
            ahead = trials.kept(candidate_thresholds(self.threshold, self.lookahead)[-1])
            if self.active_schedule == "gradual":
                cut, ratios = None, self._gradual_cut(trials, epoch, batch)
            else:
                candidates = candidate_thresholds(self.threshold, self.lookahead)
                args = (self.threshold, self.target, self.tolerance)
                cut, chosen = penalty_cut.choose_cut(trials, candidates, *args)
                ratios = penalty_cut.apply_cut(trials, candidates, cut, chosen, self.target)
        except Exception:
            self._release()
            raise
        self.ratios = dict(ratios, lookahead=ahead)
        kept = ratios[self.budget]
        previous_ahead = self._previous
        self._previous = ahead if ahead > 0 else kept
        if kept <= self.target:
            self._reach(epoch)
        elif self.active_schedule == "gradual":
            return  # the scale stays: the ranking, not the penalty, sets the pace
        elif ahead < 0 or (cut is not None and trials.kept(cut) < 0):
            # The budget would empty a layer at the look-ahead: the penalty is crushing it.
            self._set_scale(self.scale / self.growth)
        elif self._loss_guard.departed:
            # The data loss left its floor: ease off rather than push harder.
            self._set_scale(self.scale / self.growth)
        else:
            self._follow_schedule(epoch, batch, previous_ahead, ahead)

    def _gradual_cut(self, trials: PruningTrials, epoch: int, batch: int | None) -> dict:
        """This event's cut on the gradual schedule (`gradual`); none while the guard objects."""
        left = self._events_left(epoch, batch)
        if self._events_total is None:
            self._events_total = left + 1
        done = 1 - left / self._events_total
        scheduled = gradual.scheduled_fraction(self._start_kept, self.target, done)
        ratios = None
        if not self._loss_guard.departed:
            ratios = gradual.gradual_cut(self._weight_masks, trials, self.threshold, scheduled)
        if ratios is None:  # the guard objects: the schedule waits for a later event
            ratios = trials.undo()
        return ratios

    def _follow_schedule(
        self, epoch: int, batch: int | None, previous_ahead: float, ahead: float
    ) -> None:
        """Grows the scale when the look-ahead falls too slowly, shrinks it when too fast."""
        left = self._events_left(epoch, batch)
        needed = math.log(ahead / self.target) / max(1.0, left)
        progress = math.log(previous_ahead / ahead)
        if progress < needed / 2:
            # Nothing moved at all: the strength is still far too weak, search faster.
            factor = self.growth**2 if progress <= 0 else self.growth
            self._set_scale(self.scale * factor)
        elif progress > 2 * needed and left >= 2:
            self._set_scale(self.scale / self.growth)

    def _events_left(self, epoch: int, batch: int | None) -> float:
        """The events until `target_epoch` ends (60% of the `fit`'s epochs by default)."""
        params = self.params or {}
        epochs = self.target_epoch or max(1, round(0.6 * params.get("epochs", epoch + 2)))
        left = epochs - (epoch + 1)  # in epochs
        if batch is not None:
            steps = params.get("steps") or batch + 1
            left = (left + 1 - (batch + 1) / steps) * steps / self.frequency
        return left

    def _check_reachable(self) -> None:
        """Refuses a target below the smallest slim model: one unit in every layer.

        Every managed weight keeps only its first output unit (for a moment:
        the weights are restored), and the surgeon's plan of that model is
        counted. A smaller target would need a layer emptied.
        """
        smallest_ratios = one_unit_ratios(self._weight_masks)
        least = smallest_ratios[self.budget]
        if self.schedule == "auto":
            reaches = gradual.reaches(self._weight_masks, self.budget, self.target)
            self.active_schedule = "gradual" if reaches else "penalty"
        elif self.schedule == "gradual":
            try:
                gradual.check_reachable(self._weight_masks, self.budget, self.target)
            except BudgetError:
                self._release()
                raise
        if least > self.target:
            self._release()
            raise BudgetError(
                f"target_{self.budget}={self.target:g} cannot be reached without emptying a "
                f"layer: the smallest model the surgeon can build, one unit left in every "
                f"pruned layer, keeps {least:.4g} of the {self.budget} "
                f"(inputs, outputs and layers kept whole stay). Choose a target of at least "
                f"{least:.4g}, or let more layers be pruned.",
                ratios=smallest_ratios,
            )

    def _reach(self, epoch: int) -> None:
        self.reached_epoch = epoch
        self.scale_at_target = self.scale
        if self.on_target == "release":
            self._set_scale(0.0)
        if self.stop_on_target and self.model is not None:
            self.model.stop_training = True

    def _set_scale(self, scale: float) -> None:
        self.scale = float(scale)
        if self._penalty_scale is not None:
            self._penalty_scale.assign(self.scale)

    def _release(self) -> None:
        """Gives every weight its own regularizer back, unscaled, then its constraint."""
        if self._penalty_scale is not None:
            self._penalty_scale.detach()
        super()._release()  # retraces without the scale (TensorFlow, PyTorch)


def _check_above(name: str, value: float, bound: float, expected: str) -> float:
    """`value` as a float, refused unless it is finite and above `bound`."""
    try:
        checked = checks.check_non_negative_float(name, value)
    except ValueError:  # negative, NaN or infinite: the same message as any value too small
        checked = bound
    if checked <= bound:
        raise checks.invalid_value(name, f"a finite float {expected}", value)
    return checked
