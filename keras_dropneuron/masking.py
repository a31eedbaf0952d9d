"""The weights a callback manages during `fit`, their masks and their per-step work.

`PruneCallback` (and so `BudgetCallback`) keeps pruned weights at zero through
`WeightMasks`; `ProximalGroupShrinkage` runs its step on the same managed
weights through `ManagedWeights`. Each installs its per-step work for one
`fit` and takes it off again, also after a `fit` that raised (`NextFitGuard`).
"""

import contextlib
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from keras_dropneuron import _backend, layer_rules, normalized_units, pruning
from keras_dropneuron.layer_rules.base import attribute
from keras_dropneuron.layer_rules.layout import group_alive


class NextFitGuard:
    """Stands in for `model.make_train_function` while per-step work is installed.

    Every `fit` and `train_on_batch` calls `model.make_train_function()` before
    it trains. Called while the masks (or JAX step hooks) of a callback are
    still installed, the `fit` that installed them has ended without
    `on_train_end` (it raised): `remove`, the function that takes them off,
    runs first. Guards of several callbacks form a chain through `previous`;
    each one unlinks itself when its work is removed.

    Args:
        remove: Takes the work off; it must call `unlink()`.
        model: The model whose `make_train_function` is guarded.
    """

    def __init__(self, remove: Callable[[], None], model: keras.Model):
        self.remove, self.model = remove, model
        self.previous = vars(model).get("make_train_function")
        model.make_train_function = self

    def __call__(self, force: bool = False) -> Callable:
        self.remove()  # unlinks this guard
        return self.model.make_train_function(force=force)

    def unlink(self) -> None:
        """Takes this guard out of the chain that starts at the model."""
        holder, current = None, vars(self.model).get("make_train_function")
        while isinstance(current, NextFitGuard) and current is not self:
            holder, current = current, current.previous
        if current is not self:
            return
        if holder is not None:
            holder.previous = self.previous
        elif self.previous is not None:
            self.model.make_train_function = self.previous
        else:
            del self.model.make_train_function


def retrace(model: keras.Model) -> None:
    """Rebuilds the train function with the constraints now on the variables."""
    type(model).make_train_function(model, force=True)  # not through the guards


def _in_scope(model):
    """The model's distribution strategy scope, so new variables are mirrored like its own."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def new_variable(
    model: keras.Model, value: float | np.ndarray, dtype: str, name: str
) -> keras.Variable:
    """A non-trainable variable created where `model`'s own variables live.

    Args:
        model: The model the variable serves.
        value: Its initial value.
        dtype: Its dtype.
        name: Its name.

    Returns:
        A `keras.Variable`.
    """
    with _in_scope(model):
        return keras.Variable(value, dtype=dtype, trainable=False, name=name)


class ManagedWeights:
    """The prunable weights of some layers, and a JAX step hook run on them.

    Args:
        model: The model being trained.
        layers: Its layers to manage (see `model_utils.select_layers`).

    Attributes:
        model: The model.
        weights: `(layer, layout, variable)` for every prunable weight of
            `layers`, each variable once (`pruning.managed_weights`).
    """

    def __init__(self, model: keras.Model, layers: list):
        self.model = model
        self.weights = pruning.managed_weights(layers)
        self._step_hook = None
        self._guard = None

    @property
    def installed(self) -> bool:
        """Whether per-step work is on the model (until `remove()`)."""
        return self._guard is not None

    def values(self) -> list[np.ndarray]:
        """The managed weights' current values, as numpy (JAX: synced first)."""
        _backend.sync(self.model)  # JAX: the epoch's weights are not in the variables
        return [np.asarray(variable.numpy()) for _, _, variable in self.weights]

    def add_step_hook(self, hook: _backend.StepHook) -> None:
        """JAX: runs `hook` inside the train step until `remove()`."""
        self._step_hook = hook
        _backend.add_step_hook(self.model, hook)
        self._guard = NextFitGuard(self.remove, self.model)

    def remove(self) -> None:
        """Takes the per-step work off the model (a no-op when none is on)."""
        guard, self._guard = self._guard, None
        if guard is None:
            return
        guard.unlink()
        if self._step_hook is not None:
            _backend.remove_step_hook(self.model, self._step_hook)
            self._step_hook = None
        else:
            self._restore()

    def _restore(self) -> None:
        """Undoes what an install did besides a step hook (nothing here)."""


class WeightMasks(ManagedWeights):
    """Masks that keep pruned weights at zero inside the compiled train step.

    With TensorFlow and PyTorch a mask rides on its weight's `constraint`,
    which Keras applies right after every optimizer update inside the train
    step: no extra call per batch. JAX traces variables into a stateless
    step, where a mask read by a constraint would be frozen at trace time:
    there the masks are a step hook (see `keras_dropneuron._backend`), passed
    to the jitted step on every call.

    Keras calls no callback hook when `fit` raises, so the masks must not
    outlive a failed `fit` on their own: `install` guards the model's
    `make_train_function` (`NextFitGuard`), so the next training call gives
    the user's constraints back, and retraces without the masks, before it
    runs a step.

    Args:
        model: The model being trained.
        layers: Its layers to manage.
        mode: Pruning mode (see `pruning.keep_mask`). Defaults to `"weight"`.
        keep_last_unit: Whether a threshold that would empty a layer keeps
            its strongest unit instead of being refused. Defaults to `False`.

    Attributes:
        masks: One variable per managed weight (1 keeps, 0 prunes), after
            `install()`.
        biases: The recurrent biases whose entries follow their units
            (`LayerRule.unit_biases`): a unit left without a non-zero kernel
            entry loses its bias entries too, in `assign` and `prune`, and
            `bias_masks` hold them at zero.
    """

    def __init__(
        self,
        model: keras.Model,
        layers: list,
        mode: str = "weight",
        keep_last_unit: bool = False,
    ):
        super().__init__(model, layers)
        # gamma and beta of a BatchNormalization that reads a unit are masked with it.
        self.weights = pruning.managed_weights(layers, model)
        # A recurrent unit's bias follows its kernel columns (`LayerRule.unit_biases`).
        self.biases = _unit_biases(self.weights)
        self.bias_values = [np.asarray(bias.variable.numpy()) for bias in self.biases]
        self.mode = mode
        self.keep_last_unit = keep_last_unit
        self.masks = []
        self.bias_masks = []
        self._saved_constraints = []

    def values(self) -> list[np.ndarray]:
        """The managed weights' current values; the unit biases' are kept in `bias_values`."""
        values = super().values()
        self.bias_values = [np.asarray(bias.variable.numpy()) for bias in self.biases]
        return values

    def install(self) -> None:
        """Creates one mask per managed weight (all ones) and hooks it into the train step."""
        self.masks = [
            new_variable(
                self.model, np.ones(variable.shape), variable.dtype, f"{variable.name}_prune_mask"
            )
            for _, _, variable in self.weights
        ]
        self.bias_masks = [
            new_variable(
                self.model,
                np.ones(bias.variable.shape),
                bias.variable.dtype,
                f"{bias.variable.name}_prune_mask",
            )
            for bias in self.biases
        ]
        weights = [*self.weights, *((None, None, bias.variable) for bias in self.biases)]
        masks = [*self.masks, *self.bias_masks]
        if _backend.backend() == "jax":
            self.add_step_hook(_MaskHook(self.model, weights, masks))
            return
        for (_, _, variable), mask in zip(weights, masks, strict=True):
            self._saved_constraints.append((variable, variable.constraint))
            variable.constraint = _MaskConstraint(mask, variable.constraint)
        retrace(self.model)
        self._guard = NextFitGuard(self.remove, self.model)

    def _restore(self) -> None:
        """Gives the weights their own constraints back (the model outlives `fit`)."""
        for variable, constraint in reversed(self._saved_constraints):
            variable.constraint = constraint
        self._saved_constraints = []
        retrace(self.model)

    def keep_masks(self, values: list[np.ndarray], threshold: float | None) -> list[np.ndarray]:
        """The masks of the managed weights pruned at `threshold`.

        Args:
            values: The weights' values (`values()`).
            threshold: The pruning threshold, or `None`: the weights' zeros.

        Returns:
            One boolean array per managed weight, `True` where it survives.

        Raises:
            ValueError: For a weight that holds NaN or infinite values.
            pruning.UnitsWouldVanishError: When the threshold would remove
                every unit of a layer and `keep_last_unit` is off.
        """
        if threshold is None:
            return [value != 0 for value in values]
        for (layer, layout, _), value in zip(self.weights, values, strict=True):
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"PruneCallback found NaN or infinite weights in layer "
                    f"{layer.name!r} ({layout.attribute}); training diverged. "
                    "Lower the learning rate or the regularization strength."
                )
        keeps = pruning.keep_masks(self.weights, values, threshold, self.mode)
        if self.keep_last_unit:
            keeps = pruning.keep_strongest_units(self.weights, values, keeps)
            return normalized_units.sync_partners(self.weights, keeps)
        pruning.check_units_survive(self.weights, values, keeps, threshold)
        return keeps

    def assign(
        self, values: list[np.ndarray], keeps: list[np.ndarray], masks: bool = False
    ) -> None:
        """Writes `values` into the weights, zero outside `keeps`.

        Args:
            values: The weights' values.
            keeps: Boolean arrays, `True` where a weight keeps its value.
            masks: Whether the masks become `keeps` too. Defaults to `False`
                (a trial: the masks stay).
        """
        for (_, _, variable), mask, value, keep in zip(
            self.weights, self.masks, values, keeps, strict=True
        ):
            variable.assign(np.where(keep, value, 0).astype(value.dtype))
            if masks:
                mask.assign(keep.astype(mask.dtype))
        for bias, mask, value in zip(self.biases, self.bias_masks, self.bias_values, strict=True):
            keep = bias.keep(self.weights, values, keeps)
            bias.variable.assign(np.where(keep, value, 0).astype(value.dtype))
            if masks:
                mask.assign(keep.astype(mask.dtype))

    def prune(self, values: list[np.ndarray], keeps: list[np.ndarray]) -> None:
        """Sets the masks to `keeps` and zeroes the weights they drop.

        Args:
            values: The values the weights hold now (`values()`): a weight
                that `keeps` leaves whole is not written.
            keeps: Boolean arrays, `True` where a weight survives.
        """
        for (_, _, variable), mask, value, keep in zip(
            self.weights, self.masks, values, keeps, strict=True
        ):
            mask.assign(keep.astype(mask.dtype))
            if not keep.all():
                variable.assign(np.where(keep, value, 0).astype(value.dtype))
        for bias, mask, value in zip(self.biases, self.bias_masks, self.bias_values, strict=True):
            keep = bias.keep(self.weights, values, keeps)
            mask.assign(keep.astype(mask.dtype))
            if not keep.all():
                bias.variable.assign(np.where(keep, value, 0).astype(value.dtype))


class UnitBias:
    """A bias whose entries follow the units of some managed weights (`unit_biases`).

    Args:
        variable: The bias, `(..., gates * units)`.
        members: Indices in the managed weights of the weights of its units.
        gates: Their number of gate blocks.
    """

    def __init__(self, variable: keras.Variable, members: list[int], gates: int):
        self.variable, self.members, self.gates = variable, members, gates

    def keep(
        self, weights: list[tuple], values: list[np.ndarray], keeps: list[np.ndarray]
    ) -> np.ndarray:
        """Its entries of the units that keep a non-zero entry in some member weight."""
        alive = np.logical_or.reduce(
            [
                group_alive(
                    np.where(keeps[i], values[i], 0), weights[i][1].output_axes, self.gates
                )
                for i in self.members
            ]
        )
        shape = self.variable.shape
        view = (*shape[:-1], self.gates, shape[-1] // self.gates)
        return np.broadcast_to(alive, view).reshape(shape)


def _unit_biases(weights: list[tuple]) -> list[UnitBias]:
    """The `UnitBias` of every managed layer whose rule names unit biases."""
    index = {(id(layer), layout.attribute): i for i, (layer, layout, _) in enumerate(weights)}
    layers = {id(layer): layer for layer, _, _ in weights}
    found = []
    for key, layer in layers.items():
        for path, paths in layer_rules.rule_for(layer).unit_biases(layer):
            variable = attribute(layer, path)
            members = [index[key, p] for p in paths if (key, p) in index]
            if variable is not None and len(members) == len(paths):
                found.append(UnitBias(variable, members, weights[members[0]][1].gates))
    return found


def trainable_positions(model: keras.Model, weights: list) -> list[tuple[int, tuple]]:
    """`(index in model.trainable_variables, managed weight)` for each trainable managed weight.

    A frozen weight is not updated by the optimizer: the step hooks leave it alone.
    """
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    return [(position[id(w[2])], w) for w in weights if id(w[2]) in position]


class _MaskHook(_backend.StepHook):
    """JAX: multiplies the managed weights by their masks inside the train step."""

    def __init__(self, model, weights, masks):
        mask_of = {
            id(variable): mask for (_, _, variable), mask in zip(weights, masks, strict=True)
        }
        pairs = trainable_positions(model, weights)
        self.positions = [i for i, _ in pairs]
        self.masks = [mask_of[id(weight[2])] for _, weight in pairs]

    def inputs(self):
        return [mask.value for mask in self.masks]

    def apply(self, trainable, optimizer_values, inputs):
        for i, mask in zip(self.positions, inputs, strict=True):
            trainable[i] = trainable[i] * mask
        return trainable


class _MaskConstraint:
    """Zeroes pruned weights after each optimizer step, then any user constraint."""

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return ops.multiply(weight, ops.cast(self.mask, weight.dtype))
