"""`BudgetReport`: what `prune_to_budget` reached."""

import dataclasses

from keras_dropneuron.surgery.report import SlimReport


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
        dropped_regularizers: Your own weight regularizers on the input
            model, as `"path: Class"`: the slim model carries none, and during
            training those on pruned weights gave way to the DropNeuron
            penalties. Defaults to `[]`.
        distillation: `{"temperature": T, "alpha": a}` when the fine-tuning
            distilled from the original model (`distill=True`), else `None`.
            Defaults to `None`.

    Example:

    >>> slim, report = prune_to_budget(model, (x, y), (x_val, y_val), target_macs=0.5)
    >>> report.ratios["macs"], report.accuracy_drop
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
    dropped_regularizers: list[str] = dataclasses.field(default_factory=list)
    distillation: dict | None = None

    @property
    def accuracy_drop(self) -> float:
        """`error_after - error_before` (for class scores, accuracy points lost)."""
        return self.error_after - self.error_before

    def _threshold_text(self) -> str:
        if self.threshold == 0:  # the cuts zeroed whole units; nothing else fell below
            return "no weight pruned after fine-tuning (threshold 0)"
        return f"threshold {self.threshold:g} after fine-tuning"

    def __str__(self) -> str:
        return "\n".join(
            [
                f"Budget: target_{self.budget}={self.target:g}; the slim model keeps "
                f"{self.ratios['macs']:.1%} of the multiply-adds, "
                f"{self.ratios['params']:.1%} of the parameters, "
                f"{self.ratios['units']:.1%} of the units (verified)",
                f"Validation error: {self.error_before:.4g} -> {self.error_after:.4g} "
                f"(drop {self.accuracy_drop:+.4g})",
                f"Reached after {self.epochs_to_target} "
                f"epoch{'' if self.epochs_to_target == 1 else 's'} at penalty scale "
                f"{self.penalty_scale:.3g}; {self._threshold_text()}",
                str(self.slim_report),
            ]
            + self._distillation_lines()
            + self._regularizer_lines()
        )

    def _distillation_lines(self) -> list[str]:
        if not self.distillation:
            return []
        return [
            "Fine-tuned by distillation from the original model (temperature "
            f"{self.distillation['temperature']:g}, label-loss weight "
            f"{self.distillation['alpha']:g})"
        ]

    def _regularizer_lines(self) -> list[str]:
        if not self.dropped_regularizers:
            return []
        return [
            "Your weight regularizers are not on the slim model (those on pruned weights "
            "gave way to the DropNeuron penalties in training): "
            + ", ".join(self.dropped_regularizers)
        ]

    __repr__ = __str__
