"""Ranking units by importance and cutting the weakest until the slim model fits a budget.

A threshold on group norms cuts in steps: every unit between two thresholds
goes at once, and under BatchNormalization the norms of a layer shrink
together, so one step can land far below the target. A ranking cuts one unit
at a time: the units of Dense and Conv layers (with the `gamma` and `beta` of
a BatchNormalization that reads them), of LSTM, GRU and SimpleRNN layers
(also inside `Bidirectional`) and the heads of MultiHeadAttention are ordered
by the magnitude of their incoming group (`ranked_groups`), each divided by
the mean magnitude of its layer's live units, so that layers of different
fan-in compare; the weakest go first until the slim model keeps at most the
target.
"""

import numpy as np

from keras_dropneuron.budget.ranked_groups import RankedGroup, ranked_groups, without_unit
from keras_dropneuron.masking import WeightMasks
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan
from keras_dropneuron.surgery.size import slim_size_ratios
from keras_dropneuron.weight_values import cached_values

# A final cut gives units back until the slim model keeps this fraction of the target.
CLOSE_ENOUGH = 0.995


class UnitRanking:
    """The units of the ranked layers, weakest first, and the masks that cut them.

    Args:
        weight_masks: The managed weights.
        values: Their values now (`weight_masks.values()`).

    Attributes:
        order: `(layer, unit)` pairs of the live units, weakest first: a
            layer's last live unit is never listed (a layer is never emptied).
    """

    def __init__(self, weight_masks: WeightMasks, values: list[np.ndarray]):
        self.weight_masks = weight_masks
        self.values = values
        bias_values = {
            bias.members[0]: value
            for bias, value in zip(weight_masks.biases, weight_masks.bias_values, strict=True)
        }
        self.layers: list[RankedGroup] = ranked_groups(weight_masks.weights, values, bias_values)
        self.order = self._removable(self._ordered_units())
        self._kept = {}

    @property
    def size(self) -> int:
        """How many units the ranking can cut."""
        return len(self.order)

    def keeps(self, cut: int | tuple[int, ...]) -> list[np.ndarray]:
        """The masks that keep every non-zero weight but the groups of the `cut` units.

        Args:
            cut: A count (the weakest units of `order`), or positions in `order`.
        """
        positions = range(cut) if isinstance(cut, int) else cut
        return self._keeps_without([self.order[position] for position in positions])

    def _keeps_without(self, units: list[tuple[int, int]]) -> list[np.ndarray]:
        """The masks of the non-zero weights less the groups of `(layer, unit)` pairs."""
        keeps = [value != 0 for value in self.values]
        for layer_index, unit in units:
            for member in self.layers[layer_index].members:
                without_unit(keeps[member[0]], member, unit)
        return keeps

    def kept(self, cut: int | tuple[int, ...], budget: str | None = None) -> dict[str, float]:
        """The slim model's size ratios with the `cut` units cut (a trial; see `keeps`)."""
        key = tuple(range(cut)) if isinstance(cut, int) else tuple(sorted(cut))
        if key not in self._kept:
            self.weight_masks.assign(self.values, self.keeps(key))
            self._kept[key] = slim_size_ratios(self.weight_masks.model)
        return self._kept[key]

    def cut_count(self, budget: str, target: float) -> int | None:
        """The fewest weakest units whose cut makes the slim model keep at most `target`.

        Bisection: cutting more units never makes the slim model larger.
        Leaves the weights as the last trial wrote them (see `kept`).

        Returns:
            The count, or `None` when cutting every listed unit is not enough.
        """
        if self.kept(self.size)[budget] > target:
            return None
        low, high = 0, self.size
        while low < high:
            middle = (low + high) // 2
            if self.kept(middle)[budget] <= target:
                high = middle
            else:
                low = middle + 1
        return low

    def refill(
        self, count: int, budget: str, target: float, floor: float, trials: int = 64
    ) -> tuple[int, ...]:
        """The `count` weakest units, less those that fit back under `target`.

        The unit whose cut crossed the target may be a costly one (a
        convolution's filter) while cheaper ones went before it: the cut
        units are given back one at a time, strongest first, wherever the
        slim model still keeps at most `target`, until it keeps at least
        `floor` or `trials` trials are spent.

        Returns:
            The positions in `order` of the units to cut.
        """
        cut = tuple(range(count))
        for position in reversed(range(max(0, count - 1))):
            if self.kept(cut)[budget] >= floor or trials <= 0:
                break
            trials -= 1
            fewer = tuple(p for p in cut if p != position)
            if self.kept(fewer)[budget] <= target:
                cut = fewer
        return cut

    def restore(self) -> None:
        """Writes the values back (undoes the trials)."""
        self.weight_masks.assign(self.values, [value != 0 for value in self.values])

    def _removable(self, ordered: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The `ordered` units that the surgeon removes once cut (one plan, all cut).

        A unit that a model output, or a layer kept whole, reads stays in the
        slim model even when cut: cutting it would only do harm.
        """
        self.weight_masks.assign(self.values, self._keeps_without(ordered))
        try:
            with cached_values():
                graph = build_graph(self.weight_masks.model)
                plan = make_plan(graph, threshold=0.0, drop_inputs=False, approximate=False)
        finally:
            self.restore()
        kept = []
        for ranked in self.layers:
            calls = graph.calls_of_layer.get(id(ranked.layer), ())
            single = len(calls) == 1
            kept.append(ranked.family.kept_units(ranked.layer, plan, calls[0]) if single else None)
        return [
            (index, unit)
            for index, unit in ordered
            if kept[index] is not None and unit not in kept[index]
        ]

    def _ordered_units(self) -> list[tuple[int, int]]:
        """Every live unit but each layer's strongest, by score over its layer's mean."""
        entries = []
        for layer_index, ranked in enumerate(self.layers):
            live = np.flatnonzero(ranked.scores > 0)
            if live.size < 2:
                continue  # its only live unit stays
            relative = ranked.scores[live] / np.mean(ranked.scores[live])
            strongest = live[np.argmax(relative)]
            entries += [
                (score, layer_index, int(unit))
                for score, unit in zip(relative, live, strict=True)
                if unit != strongest
            ]
        entries.sort()
        return [(layer_index, unit) for _, layer_index, unit in entries]


def ranking_ratios(weight_masks: WeightMasks, budget: str) -> float:
    """The smallest fraction of `budget` a ranking cut reaches (every listed unit cut)."""
    values = weight_masks.values()
    ranking = UnitRanking(weight_masks, values)
    try:
        return ranking.kept(ranking.size)[budget]
    finally:
        ranking.restore()


def ranked_cut(
    weight_masks: WeightMasks,
    original: list[np.ndarray],
    values: list[np.ndarray],
    budget: str,
    target: float,
    floor: float | None = None,
) -> dict[str, float] | None:
    """Cuts the weakest units of `values` until the slim model keeps at most `target`.

    Writes the weights (`original`, zero where pruned) and the masks.

    Args:
        weight_masks: The managed weights, masks installed.
        original: Their values before this event.
        values: The values to rank, `original` with some groups already pruned.
        budget: `"macs"`, `"params"` or `"units"`.
        target: The fraction of `budget` to keep at most.
        floor: With a floor, cut units are given back while the slim model
            keeps less than it (`UnitRanking.refill`): the final cut.
            Defaults to `None`.

    Returns:
        The slim model's size ratios, or `None` (nothing written) when
        cutting every ranked unit is not enough.
    """
    ranking = UnitRanking(weight_masks, values)
    count = ranking.cut_count(budget, target)
    if count is None:
        weight_masks.assign(original, [value != 0 for value in original])
        return None
    cut = count if floor is None else ranking.refill(count, budget, target, floor)
    weight_masks.assign(original, ranking.keeps(cut), masks=True)
    return ranking.kept(cut)
