"""The one-call pipeline: `prune_to_budget` regularizes, trains to the budget and slims.

It uses the budget controller (`BudgetCallback`) to train, then
`choose_threshold`, `slim_model` and the surgeon's counts; nothing here is
used by the controller.
"""

import dataclasses

import keras
import numpy as np

from keras_dropneuron import checks, cloning, model_utils, pruning
from keras_dropneuron.budget.anneal import CosineAnneal, check_finetune_schedule
from keras_dropneuron.budget.controller import BudgetCallback
from keras_dropneuron.budget.data import check_pair, check_single_output
from keras_dropneuron.budget.distill import (
    check_distill_arguments,
    distill_fit,
    output_logits,
)
from keras_dropneuron.budget.report import BudgetReport
from keras_dropneuron.budget.targets import BudgetError, check_target
from keras_dropneuron.budget.thresholds import largest
from keras_dropneuron.compiling import compile_like
from keras_dropneuron.model_utils import has_dropneuron_regularizer
from keras_dropneuron.regularize import regularize_model
from keras_dropneuron.regularizers import DROPNEURON_REGULARIZERS
from keras_dropneuron.surgery.size import size_ratios, slim_size_ratios
from keras_dropneuron.surgery.slim import slim_model
from keras_dropneuron.threshold import choose_threshold, default_score, default_thresholds


def prune_to_budget(  # over 60 lines only through its signature, one line per argument
    model: keras.Model,
    train_data: tuple,
    val_data: tuple,
    *,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_units: float | None = None,
    max_accuracy_drop: float = 0.005,
    epochs: int = 10,
    finetune_epochs: int = 2,
    finetune_schedule: str = "cosine",
    li: float = 4e-4,
    lo: float = 4e-4,
    threshold: float = 1e-2,
    growth: float = 1.5,
    tolerance: float = 0.03,
    frequency: str | int = "epoch",
    schedule: str = "auto",
    loss_guard: float | None = 1.0,
    batch_size: int = 128,
    optimizer: keras.optimizers.Optimizer | str | None = None,
    loss: object = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | str = 0,
    distill: bool = False,
    distill_temperature: float = 2.0,
    distill_alpha: float = 0.5,
    **unknown: float | None,
) -> tuple[keras.Model, BudgetReport]:
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
        model: A Sequential or Functional model with one input and one
            output (trained or not); never modified.
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
        finetune_schedule: The fine-tuning's learning rate: `"cosine"`
            (decays from the optimizer's rate to 0 over the fine-tuning, so
            the weights and BatchNormalization's statistics settle) or
            `"constant"`. An optimizer built with a `LearningRateSchedule`
            keeps its own. Defaults to `"cosine"`.
        li, lo: Base strengths given to `regularize_model` (the controller
            scales them). Defaults to `4e-4`.
        threshold: Pruning threshold during training. Defaults to `1e-2`.
        growth, tolerance, frequency: See `BudgetCallback`. Defaults to
            `1.5`, `0.03`, `"epoch"`.
        schedule: `"gradual"` (the weakest units are cut on a schedule,
            with the penalties on; what a trained model needs), `"penalty"`
            (the controller steers the penalties' strength until units die,
            as in the paper's training from scratch) or `"auto"`: gradual
            where cutting the units of Dense, Conv and recurrent layers and
            attention heads can reach the target, else penalty (keras-hub
            blocks); see
            `BudgetCallback`. Defaults to `"auto"`.
        loss_guard: How far the data loss on `val_data` may rise above its
            lowest value during penalized training, as a fraction of it,
            before the controller eases off (`None`: never; see
            `BudgetCallback`). Defaults to `1.0`.
        batch_size: Training batch size. Defaults to `128`.
        optimizer, loss: How to compile the copy. An optimizer instance is
            a recipe: the copy gets a new one from its config, so one
            instance can serve several calls. Defaults to `None`: the
            model's own compile configuration (a fresh optimizer), or
            `"adam"`; a model that is not compiled needs `loss`.
        callbacks: More callbacks for both `fit`s (after the budget's own,
            so `CSVLogger` and `TensorBoard` see its figures). Defaults to
            `None`.
        verbose: Passed to `fit`. Defaults to `0`.
        distill: Fine-tune by distillation from `model` (the original,
            frozen) with Keras's `Distiller` and `LogitsDistillation`, on
            the exact pre-softmax logits of both (see
            `keras_dropneuron.budget.distill`). Needs class scores: a
            softmax output, or logits. Defaults to `False`.
        distill_temperature: The distillation's softmax temperature, > 0.
            Defaults to `2.0`.
        distill_alpha: Weight of the label loss in the distillation's loss,
            in [0, 1] (the distillation term gets `1 - distill_alpha`).
            Defaults to `0.5`.

    Returns:
        `(slim_model, BudgetReport)`.

    Raises:
        TypeError, ValueError: On invalid arguments (a target of 0, above 1,
            NaN, none or two targets, an unknown `target_<kind>`, a model
            with several inputs or outputs, a `distill_temperature` <= 0, a
            `distill_alpha` outside [0, 1], or with `distill=True` a model
            whose output is not class scores).
        BudgetError: A `ValueError` when the budget is not reached in
            `epochs`, needs a layer emptied, is missed by the verified slim
            model (a callback set pruned weights back), or costs more than
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
    check_single_output(model)
    x, y = check_pair("train_data", train_data, model)
    x_val, y_val = check_pair("val_data", val_data, model)
    max_drop = checks.check_non_negative_float("max_accuracy_drop", max_accuracy_drop)
    epochs = checks.check_int("epochs", epochs, 1)
    finetune_epochs = checks.check_int("finetune_epochs", finetune_epochs, 0)
    finetune_schedule = check_finetune_schedule(finetune_schedule)
    batch_size = checks.check_int("batch_size", batch_size, 1)
    li = checks.check_non_negative_float("li", li)
    lo = checks.check_non_negative_float("lo", lo)
    distill = checks.check_bool("distill", distill)
    temperature, alpha = check_distill_arguments(distill_temperature, distill_alpha)
    distillation = {"temperature": temperature, "alpha": alpha}
    if distill:
        output_logits("model", model)  # a model without class scores, before training
    callback_args = {f"target_{budget}": target, "threshold": threshold, "growth": growth}
    callback_args.update(tolerance=tolerance, frequency=frequency, schedule=schedule)
    callback_args.update(loss_guard=loss_guard)
    BudgetCallback(**callback_args)  # checks them before any training
    # The guard watches the data loss on the validation data (not part of the config).
    guard = {"guard_data": (x_val, y_val)}
    with cloning.uncompiled(model):  # the copy is compiled once, here
        copy = _penalized_copy(model, li, lo)
    compile_like(copy, model, _fresh_optimizer(optimizer), loss)

    error_before = _score(model, x_val, y_val, batch_size)
    training = _Training(x, y, batch_size, verbose, list(callbacks or []))
    epochs_to_target, penalty_scale = _train_to_target(
        copy, training, {**callback_args, **guard}, epochs
    )
    if finetune_epochs:
        own = [BudgetCallback(**callback_args, on_target="release")]
        if finetune_schedule == "cosine":
            own.append(CosineAnneal())
        teacher = model if distill else None
        training.fit(copy, finetune_epochs, own, teacher=teacher, distillation=distillation)
    chosen = _choose_threshold(copy, x_val, y_val, budget, target * (1 - tolerance), batch_size)
    slim, slim_report = slim_model(copy, keep_regularizers=False, return_report=True)
    report = BudgetReport(
        budget=budget,
        target=target,
        ratios=size_ratios(slim_report, copy),
        error_before=error_before,
        error_after=_score(slim, x_val, y_val, batch_size),
        threshold=chosen,
        epochs_to_target=epochs_to_target,
        penalty_scale=penalty_scale,
        slim_report=slim_report,
        dropped_regularizers=_own_regularizers(model),
        distillation=distillation if distill and finetune_epochs else None,
    )
    _check_budget(report, slim)
    _check_accuracy(report, max_drop, slim)
    return slim, report


@dataclasses.dataclass
class _Training:
    """How the pipeline's `fit`s run: the data, batch size, verbosity, the user's callbacks."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    verbose: int | str
    extra: list

    def fit(
        self,
        model: keras.Model,
        epochs: int,
        own: list[keras.callbacks.Callback],
        teacher: keras.Model | None = None,
        distillation: dict | None = None,
    ) -> keras.callbacks.History:
        """`model.fit` with the pipeline's callbacks `own` first (so `CSVLogger` and
        `TensorBoard` see their figures); by distillation from `teacher` if given."""
        kwargs = dict(epochs=epochs, batch_size=self.batch_size, verbose=self.verbose)
        kwargs["callbacks"] = [*own, *self.extra]
        if teacher is None:
            return model.fit(self.x, self.y, **kwargs)
        return distill_fit(model, teacher, self.x, self.y, **kwargs, **distillation)


def _train_to_target(
    copy: keras.Model, training: _Training, callback_args: dict, epochs: int
) -> tuple[int, float]:
    """Penalized training until the target; `(epochs it took, penalty scale there)`."""
    train = BudgetCallback(**callback_args, on_target="release", stop_on_target=True)
    history = training.fit(copy, epochs, [train])
    if not train.reached:
        ran = len(history.epoch)
        raise BudgetError(
            f"target_{train.budget}={train.target:g} not reached in {ran} epochs: the slim "
            f"model would keep {train.ratios[train.budget]:.4g} of the {train.budget} "
            f"(penalty scale {train.scale:.3g}). "
            f"{_not_reached_advice(train, ran, epochs, training.extra)}",
            ratios=dict(train.ratios),
        )
    return len(history.epoch), train.scale_at_target


def _not_reached_advice(train: BudgetCallback, ran: int, epochs: int, extra: list) -> str:
    """What would help a target not reached, from how training ended."""
    scale = train.scale
    if ran < epochs:
        # Only a callback stops fit early here: the budget's own stops at the target.
        names = ", ".join(type(callback).__name__ for callback in extra) or "a callback"
        return (
            f"Training was stopped after {ran} of {epochs} epochs by one of your callbacks "
            f"({names}): while the penalties grow the loss rises, which stops "
            "`EarlyStopping` on `loss`; leave such callbacks out of `prune_to_budget` or "
            "give them more `patience=`."
        )
    if train.active_schedule == "gradual" and train.loss_guard is not None:
        # The schedule reaches the target by its last planned event unless the guard held it.
        return (
            "The schedule waited while the validation data loss stood more than "
            f"`loss_guard={train.loss_guard:g}` times above its lowest value: the model "
            "loses too much at this size. Relax the target, train longer (`epochs=`) or "
            "allow more (`loss_guard=`)."
        )
    if train.active_schedule == "gradual":
        return "Train longer (`epochs=`) or relax the target."
    if scale >= 10:
        # The controller already multiplied li and lo: the optimizer, not the penalty, lags.
        return (
            f"The penalties already stand at {scale:.3g} times `li` and `lo`, so stronger ones "
            "would not help: give the optimizer more steps (`epochs=`, a smaller "
            "`batch_size=`) or a higher learning rate, or relax the target; for a model "
            'that is already trained, `schedule="gradual"` cuts the weakest units instead.'
        )
    return "Train longer (`epochs=`), start stronger (`li=`, `lo=`) or relax the target."


def _check_budget(report: BudgetReport, slim: keras.Model) -> None:
    """Refuses a verified slim model that keeps more than the target."""
    kept = report.ratios[report.budget]
    if kept <= report.target * (1 + 1e-9):  # only float rounding is let through
        return
    raise BudgetError(
        f"target_{report.budget}={report.target:g} was missed: the verified slim model keeps "
        f"{kept:.4g} of the {report.budget}, although training reached the target. A callback "
        "that sets weights back (e.g. `EarlyStopping(restore_best_weights=True)`) can undo "
        "the pruning: leave it out, or monitor a figure that only improves once pruned. The "
        "slim model is on this error's `.model`, its report on `.report`.",
        ratios=report.ratios,
        model=slim,
        report=report,
    )


def _check_accuracy(report: BudgetReport, max_drop: float, slim: keras.Model) -> None:
    """Refuses a slim model whose validation error rose by more than `max_drop`."""
    if report.accuracy_drop <= max_drop:
        return
    raise BudgetError(
        f"target_{report.budget}={report.target:g} was reached (the verified slim model "
        f"keeps {report.ratios[report.budget]:.4g} of the {report.budget}) but the validation "
        f"error rose from {report.error_before:.4g} to {report.error_after:.4g} "
        f"(+{report.accuracy_drop:.4g}), "
        f"more than max_accuracy_drop={max_drop:g}. Nothing is returned: train or "
        "fine-tune longer, or relax the budget. The slim model is on this error's "
        "`.model`, its report on `.report`.",
        ratios=report.ratios,
        model=slim,
        report=report,
    )


def _own_regularizers(model: keras.Model) -> list[str]:
    """The user's weight regularizers on `model` (not DropNeuron's), as `"path: Class"`."""
    return [
        f"{variable.path}: {type(variable.regularizer).__name__}"
        for variable in model.weights
        if getattr(variable, "regularizer", None) is not None
        and not isinstance(variable.regularizer, DROPNEURON_REGULARIZERS)
    ]


def _fresh_optimizer(optimizer: object) -> object:
    """A new optimizer from an instance's config: an instance is built for one model only."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer.__class__.from_config(optimizer.get_config())
    return optimizer


def _score(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return default_score(y, model.predict(x, batch_size=batch_size, verbose=0))


def _penalized_copy(model: keras.Model, li: float, lo: float) -> keras.Model:
    """A copy of `model` that carries DropNeuron penalties (the user's, or Li+Lo)."""
    layers = model_utils.select_layers(model)
    model_utils.check_has_supported_layers(model, layers)
    if any(has_dropneuron_regularizer(layer) for layer in layers):
        copy = cloning.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    if not li and not lo:
        raise ValueError(
            "Invalid value for arguments `li` and `lo`: expected at least one > 0 when the "
            "model carries no DropNeuron penalty. Received: li=0.0, lo=0.0"
        )
    return regularize_model(model, li=li, lo=lo)


def _choose_threshold(
    copy: keras.Model,
    x_val: np.ndarray,
    y_val: np.ndarray,
    budget: str,
    floor: float,
    batch_size: int,
) -> float:
    """`choose_threshold` among the thresholds that keep the budget above `floor`; prunes."""
    grid = default_thresholds()
    trial = cloning.clone_model(copy)
    weights = copy.get_weights()

    def keeps_budget(threshold):
        trial.set_weights(weights)
        try:
            pruning.prune_weights(trial, threshold)
        except pruning.UnitsWouldVanishError:
            return False
        return slim_size_ratios(trial)[budget] >= floor

    largest_kept = largest(grid, keeps_budget)
    if largest_kept is None:
        return 0.0
    chosen, _ = choose_threshold(
        copy,
        x_val,
        y_val,
        thresholds=[t for t in grid if t <= largest_kept],
        batch_size=batch_size,
    )
    if chosen:
        pruning.prune_weights(copy, chosen)
    return chosen
