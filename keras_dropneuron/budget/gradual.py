"""The gradual schedule: from a trained model, the weakest units go a few at a time.

At each event the slim model may keep at most a scheduled fraction, which
falls from the size at the start to the target by the planned last event,
fast first and slowly at the end (cubic, as in Zhu and Gupta's gradual
pruning), so the last cuts leave time to recover. The cut itself is a
ranking (`ranking.ranked_cut`) after pruning at the threshold.
"""

from keras_dropneuron.budget.ranking import CLOSE_ENOUGH, ranked_cut, ranking_ratios
from keras_dropneuron.budget.targets import BudgetError
from keras_dropneuron.budget.thresholds import PruningTrials
from keras_dropneuron.masking import WeightMasks


def scheduled_fraction(start: float, target: float, done: float) -> float:
    """The fraction the slim model may keep once `done` (0 to 1) of the events are past."""
    done = min(1.0, max(0.0, done))
    return target + (start - target) * (1 - done) ** 3


def gradual_cut(
    weight_masks: WeightMasks, trials: PruningTrials, threshold: float, scheduled: float
) -> dict[str, float] | None:
    """Prunes at `threshold`, then cuts by ranking down to `scheduled`.

    Units that fit back under `scheduled` are given back (`UnitRanking.refill`):
    a costly filter crossing the line would otherwise leave the slim model
    far under the schedule, and under the target before its last event.

    Returns:
        The ratios reached. A threshold that would empty a layer is skipped:
        the ranking alone cuts, never emptying one.

    Raises:
        BudgetError: When cutting every ranked unit keeps more than `scheduled`.
    """
    kept = trials.kept(threshold)
    if 0 <= kept <= scheduled:
        keeps, ratios = trials.outcome(threshold)
        weight_masks.assign(trials.values, keeps, masks=True)
        return ratios
    values = trials.pruned_values(threshold) if kept >= 0 else trials.values
    floor = scheduled * CLOSE_ENOUGH
    ranked = ranked_cut(weight_masks, trials.values, values, trials.budget, scheduled, floor)
    if ranked is None:
        ratios = trials.outcome(threshold)[1] if kept >= 0 else trials.undo()
        raise BudgetError(
            f"schedule='gradual' cannot cut the slim model down to {scheduled:.4g} of the "
            f"{trials.budget}: cutting every ranked unit (of Dense, Conv and recurrent "
            "layers, and attention heads) is not enough. Relax the target, or use "
            "schedule='penalty'.",
            ratios=ratios,
        )
    return ranked


def reaches(weight_masks: WeightMasks, budget: str, target: float) -> bool:
    """Whether cutting every ranked unit makes the slim model keep at most `target`."""
    return ranking_ratios(weight_masks, budget) <= target


def check_reachable(weight_masks: WeightMasks, budget: str, target: float) -> None:
    """Refuses a target that cutting every ranked unit cannot reach.

    Raises:
        BudgetError: Giving the smallest fraction the ranking reaches.
    """
    least = ranking_ratios(weight_masks, budget)
    if least > target:
        raise BudgetError(
            f"target_{budget}={target:g} cannot be reached with schedule='gradual': it cuts "
            "the units of Dense, Conv and recurrent layers and attention heads, one left in "
            f"each layer, and that keeps "
            f"{least:.4g} of the {budget}. Choose a target of at least {least:.4g}, or "
            "schedule='penalty'.",
            ratios={budget: least},
        )
