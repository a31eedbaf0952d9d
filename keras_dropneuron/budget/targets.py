"""What the user asks for: one `target_<budget>=fraction`, and the error when it is not met."""

import math
import numbers

import numpy as np

from keras_dropneuron import checks
from keras_dropneuron.surgery.size import SIZE_KINDS

BUDGETS = SIZE_KINDS  # the sizes the surgeon counts: multiply-adds, parameters, units
TARGET_ARGUMENTS = tuple(f"target_{kind}" for kind in BUDGETS)


class BudgetError(ValueError):
    """The budget or the accuracy constraint could not be met.

    Args:
        message: What was asked and what was reached.
        ratios: See below. Defaults to `None`.
        model: See below. Defaults to `None`.
        report: See below. Defaults to `None`.

    Attributes:
        ratios: What was reached: the `macs`, `params` and `units` ratios of
            the slim model (or of the model being trained), or `None`.
        model: The slim model that was built but not returned (it misses the
            accuracy constraint), or `None`.
        report: Its `BudgetReport`, or `None`.
    """

    def __init__(
        self,
        message: str,
        ratios: dict[str, float] | None = None,
        model: object = None,
        report: object = None,
    ):
        super().__init__(message)
        self.ratios = ratios
        self.model = model
        self.report = report


def check_target(caller: str, **targets: float | None) -> tuple[str, float]:
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

    Example:

    >>> check_target("prune_to_budget", target_macs=0.5, target_params=None)
    ('macs', 0.5)
    """
    unknown = sorted(set(targets) - set(TARGET_ARGUMENTS))
    for name in unknown:
        if not name.startswith("target_"):
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if unknown:
        raise TypeError(
            f"Unknown kind of budget: {', '.join(unknown)}. Expected one of "
            f"{', '.join(TARGET_ARGUMENTS)} (multiply-adds, parameters, units)."
        )
    given = {name: value for name, value in targets.items() if value is not None}
    if len(given) != 1:
        raise ValueError(
            f"Expected exactly one of {', '.join(TARGET_ARGUMENTS)}. Received: {given or 'none'}"
        )
    ((name, value),) = given.items()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise checks.invalid_type(name, "a float in (0, 1]", value)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise checks.invalid_value(
            name, "a fraction of the original model in (0, 1], e.g. 0.5", value
        )
    return name[len("target_") :], float(value)
