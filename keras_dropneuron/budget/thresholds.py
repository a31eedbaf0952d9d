"""Searching pruning thresholds: the candidates, bisection and trial pruning."""

from collections.abc import Callable

import numpy as np

from keras_dropneuron import pruning
from keras_dropneuron.masking import WeightMasks
from keras_dropneuron.surgery.size import slim_size_ratios


def candidate_thresholds(threshold: float, lookahead: float) -> list[float]:
    """Sixteenths of `threshold`, then 16 geometric steps up to `lookahead * threshold`.

    Args:
        threshold: The pruning threshold.
        lookahead: The largest candidate, as a multiple of `threshold`.

    Returns:
        32 increasing thresholds, `threshold` the 16th.
    """
    candidates = [threshold * i / 16 for i in range(1, 17)]
    return candidates + np.geomspace(threshold, threshold * lookahead, 17)[1:].tolist()


def smallest(candidates: list[float], ok: Callable[[float], bool]) -> float | None:
    """The smallest of the sorted `candidates` with `ok(c)` (monotone: false, then true)."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if ok(candidates[middle]):
            best, high = candidates[middle], middle - 1
        else:
            low = middle + 1
    return best


def largest(candidates: list[float], ok: Callable[[float], bool]) -> float | None:
    """The largest of the sorted `candidates` with `ok(c)` (monotone: true, then false)."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if ok(candidates[middle]):
            best, low = candidates[middle], middle + 1
        else:
            high = middle - 1
    return best


class PruningTrials:
    """What the slim model keeps when the managed weights are pruned at a threshold.

    Each trial writes the pruned values into the weights (not the masks) and
    counts the model the surgeon would build from them (`slim_size_ratios`);
    every threshold is tried once.

    Args:
        weight_masks: The managed weights.
        values: Their values before any trial.
        budget: The kind of size that `kept` returns: `"macs"`, `"params"`
            or `"units"`.
    """

    def __init__(self, weight_masks: WeightMasks, values: list[np.ndarray], budget: str):
        self.weight_masks = weight_masks
        self.values = values
        self.budget = budget
        self._outcomes = {}

    def kept(self, threshold: float) -> float:
        """The budget's fraction kept at `threshold`; -1 where pruning would empty a layer."""
        if threshold not in self._outcomes:
            try:
                keeps = self.weight_masks.keep_masks(self.values, threshold)
            except pruning.UnitsWouldVanishError:
                self._outcomes[threshold] = (-1.0, None, None)
            else:
                self.weight_masks.assign(self.values, keeps)
                ratios = slim_size_ratios(self.weight_masks.model)
                self._outcomes[threshold] = (ratios[self.budget], keeps, ratios)
        return self._outcomes[threshold][0]

    def outcome(self, threshold: float) -> tuple[list[np.ndarray], dict[str, float]]:
        """`(keeps, ratios)` of a threshold already tried that empties no layer."""
        _, keeps, ratios = self._outcomes[threshold]
        return keeps, ratios

    def pruned_values(self, threshold: float) -> list[np.ndarray]:
        """The values with zeros where a threshold already tried prunes them."""
        keeps, _ = self.outcome(threshold)
        return [np.where(keep, value, 0) for value, keep in zip(self.values, keeps, strict=True)]

    def undo(self) -> dict[str, float]:
        """Writes the values back (masks: their non-zeros); the slim model's ratios."""
        self.weight_masks.assign(self.values, [value != 0 for value in self.values])
        return slim_size_ratios(self.weight_masks.model)


def one_unit_ratios(weight_masks: WeightMasks) -> dict[str, float]:
    """The size ratios of the smallest slim model: one output unit left in every weight.

    Every managed weight keeps only its first output unit for the count; the
    weights are restored afterwards.

    Args:
        weight_masks: The managed weights.

    Returns:
        The `slim_size_ratios` of that model.
    """
    values = weight_masks.values()
    keeps = []
    for (_, layout, _), value in zip(weight_masks.weights, values, strict=True):
        keep = np.zeros(value.shape, dtype=bool)
        first = [slice(None)] * value.ndim
        for axis in layout.output_axes:
            first[axis] = 0
        keep[tuple(first)] = True
        keeps.append(keep)
    try:
        weight_masks.assign(values, keeps)
        return slim_size_ratios(weight_masks.model)
    finally:
        weight_masks.assign(values, [np.ones(value.shape, dtype=bool) for value in values])
