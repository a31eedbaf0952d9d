"""The penalty schedule's cut: prune at the smallest threshold that meets the target.

At every event the controller tries the candidate thresholds (`PruningTrials`)
and prunes at the smallest one with which the slim model keeps at most the
target. That last step can take much more than the budget asks (a threshold
step prunes many units at once), so at the final cut the units between the
last threshold that keeps more than the target and the cut are ranked and cut
one by one, weakest first, and those that fit back are given back
(`ranking.ranked_cut`).
"""

from keras_dropneuron.budget.ranking import CLOSE_ENOUGH, ranked_cut
from keras_dropneuron.budget.thresholds import PruningTrials, largest, smallest


def choose_cut(
    trials: PruningTrials,
    candidates: list[float],
    threshold: float,
    target: float,
    tolerance: float,
) -> tuple[float | None, float | None]:
    """`(cut, chosen)`: the smallest candidate that meets the target, and the one to use.

    `chosen` is `cut` when pruning there empties no layer; else the largest
    candidate up to `threshold` (and below `cut`) that keeps at least
    `target * (1 - tolerance)`, or `None` when none does.
    """
    cut = smallest(candidates, lambda t: trials.kept(t) <= target)
    if cut is not None and trials.kept(cut) >= 0:
        return cut, cut  # the budget is within reach: cut exactly there
    below = [t for t in candidates if t <= threshold and (cut is None or t < cut)]
    floor = target * (1 - tolerance)
    return cut, largest(below, lambda t: trials.kept(t) >= floor)


def apply_cut(
    trials: PruningTrials,
    candidates: list[float],
    cut: float | None,
    chosen: float | None,
    target: float,
) -> dict[str, float]:
    """Prunes at `chosen` (weights and masks), or undoes the trials; the ratios reached.

    At the final cut (`chosen == cut`) the cut is a ranking from the last
    candidate that keeps more than the target (see the module docstring).
    """
    if chosen is None:
        return trials.undo()
    if chosen == cut:
        above = [t for t in candidates if t < cut]
        start = trials.values
        if above and trials.kept(above[-1]) > target:
            start = trials.pruned_values(above[-1])
        masks, floor = trials.weight_masks, target * CLOSE_ENOUGH
        ranked = ranked_cut(masks, trials.values, start, trials.budget, target, floor)
        if ranked is not None:
            return ranked
    keeps, ratios = trials.outcome(chosen)
    trials.weight_masks.assign(trials.values, keeps, masks=True)
    return ratios
