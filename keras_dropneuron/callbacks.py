"""PruneCallback: DropNeuron's Dropping Principle 1 inside `model.fit`."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_dropneuron import _backend, checks, layer_rules, model_utils, pruning


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class PruneCallback(keras.callbacks.Callback):
    """Zeroes sub-threshold weights during training and keeps them at zero.

    At every pruning event (by default the end of each epoch) every weight with
    `|w| < threshold` in the managed layers is set to zero, or, in a group mode,
    every incoming or outgoing group whose L2 norm is below `threshold`. Pruned
    weights are masked again after every training batch, so momentum in the
    optimizer cannot revive them: on every backend the masks are applied inside
    the (compiled) train step, right after each optimizer update: with
    TensorFlow and PyTorch through the weights' `constraint` (any constraint of
    your own still runs first, and is given back when training ends, see
    "Errors" below); with JAX by the train function, which multiplies the new
    weights by the masks after the optimizer and your constraints, the masks
    being passed to the jitted step as arguments, so that a pruning event
    needs no retracing. Weights that are
    already exactly zero when training starts (for example after a restart
    from a checkpoint) count as pruned, which makes the masks survive `BackupAndRestore` and
    `ModelCheckpoint` without extra state. A run that resumes at epoch `e > 0`
    repeats the pruning event of the end of epoch `e - 1` before training, so a
    backup saved before that event (by a callback placed before this one) resumes
    with the same masks as an uninterrupted run. Repeating an event changes
    nothing in the `"weight"`, `"incoming"` and `"outgoing"` modes; in `"neuron"`
    mode it may prune a few more units whose norms the event itself reduced.

    At the end of each epoch the callback writes into `logs`:
    `sparsity` (fraction of managed weights that are zero) and `alive_units`
    (output units of the managed layers whose incoming weights are not all
    zero). The progress bar and `History` show them; place the callback before
    `CSVLogger` or `TensorBoard` in the list so that those see them too.

    Args:
        threshold: Pruning threshold, a finite float >= 0. Defaults to `1e-2`,
            the paper's value.
        frequency: `"epoch"` to prune at the end of every epoch, or an int `n`
            to prune after every `n` training batches, counted over the whole
            run (across epochs). Defaults to `"epoch"`. With
            `steps_per_execution=k` in `compile`, Keras runs `k` batches in one
            compiled call and nothing can prune inside it: the event for batch
            `m * n` happens at the end of the call that ran it, up to `k - 1`
            batches late, and a call that runs several multiples of `n`
            (possible when `k > n`) prunes once. With `k <= n` every multiple
            of `n` thus gets its own event and the first `b` batches of a run
            have `b // n` events, as with `k = 1`; with `k = 4` and `n = 3`,
            24 batches have 6 events, after batches 4, 8, ..., 24.
        mode: `"weight"`, `"incoming"`, `"outgoing"` or `"neuron"` (both
            groups); see `keras_dropneuron.pruning.keep_mask`. A recurrent
            unit's group spans its columns in every gate block (in a
            `Bidirectional`, per direction); an attention
            layer's units are its heads (`"incoming"` prunes whole heads).
            Defaults to `"weight"`.
        layers: Names of the layers to manage. Defaults to `None`: the layers
            that carry a DropNeuron regularizer, or every supported layer when
            none do.
        warmup_epochs: Number of epochs to train before the first pruning
            event. Defaults to `0`.
        keep_last_unit: When a pruning event would remove every unit (or
            head) of a layer, keep that layer's strongest unit instead of
            refusing the event and stopping `fit`. Useful for residual
            blocks, where a dead sublayer only adds a constant. Defaults to
            `False`.

    Raises:
        TypeError, ValueError: On invalid arguments (checked here); when
            training starts, for layers that the model does not have, models
            without supported layers or weights that are not finite; at a
            pruning event, for weights that turned NaN or a threshold that
            would remove every unit of a layer (the event is refused and
            training stops with the weights as they were, see
            `keras_dropneuron.pruning.check_units_survive`).

    Errors: Keras calls no callback when `fit` raises, so the masks come off
    at the first moment the callback can act. After this callback's own errors
    (above) your constraints are back before the error leaves `fit`. After any
    other error (another callback, the train step, `KeyboardInterrupt`) they
    stay on the variables until the model next trains: `fit` and
    `train_on_batch` take them off before their first step, so the pruned
    weights are free again unless a new `PruneCallback` is passed. (A custom
    loop calling `optimizer.apply` before that would still apply them.)

    Example:

    >>> model.fit(x, y, epochs=10, callbacks=[PruneCallback(threshold=1e-2)])
    """

    def __init__(
        self,
        threshold=1e-2,
        frequency="epoch",
        mode="weight",
        layers=None,
        warmup_epochs=0,
        keep_last_unit=False,
    ):
        super().__init__()
        self.threshold = checks.check_non_negative_float("threshold", threshold)
        # An int frequency is a number of batches.
        self.frequency = checks.check_int("frequency", frequency, 1, alternatives=("epoch",))
        self.mode = checks.check_choice("mode", mode, pruning.PRUNE_MODES)
        self.layers = checks.check_layers("layers", layers, names_only=True)
        self.warmup_epochs = checks.check_int("warmup_epochs", warmup_epochs, 0)
        self.keep_last_unit = checks.check_bool("keep_last_unit", keep_last_unit)
        # With per-epoch pruning the batch hook only counts batches, so Keras may
        # dispatch it asynchronously instead of syncing every step.
        self.async_safe = frequency == "epoch"
        self._weights = []
        self._masks = []
        self._saved_constraints = []
        self._step_hook = None
        self._epoch = 0
        self._batches_seen = 0
        self._epoch_batches_done = 0
        self._masks_synced = False
        self._next_fit_hook = None

    def get_config(self):
        return {
            "threshold": self.threshold,
            "frequency": self.frequency,
            "mode": self.mode,
            "layers": self.layers,
            "warmup_epochs": self.warmup_epochs,
            "keep_last_unit": self.keep_last_unit,
        }

    def on_train_begin(self, logs=None):
        checks.check_model("model", self.model)
        layers = model_utils.select_layers(self.model, self.layers, prefer_regularized=True)
        model_utils.check_has_supported_layers(self.model, layers)
        model_utils.check_finite_weights(layers, "prune")
        self._weights = pruning.managed_weights(layers)
        self._batches_seen = 0
        self._install_masks()
        # Masks are read from the weights at the first epoch, after callbacks
        # such as BackupAndRestore have restored them in their on_train_begin.
        self._masks_synced = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_batches_done = 0
        if not self._masks_synced:
            # A run that resumes at `epoch` (BackupAndRestore, initial_epoch) repeats
            # the pruning event that ended `epoch - 1`: a backup written by a callback
            # placed before this one holds the weights from before that event.
            resumed = epoch > 0 and self.frequency == "epoch" and epoch - 1 >= self.warmup_epochs
            self._update_masks(self.threshold if resumed else None)
            self._masks_synced = True

    def on_train_batch_end(self, batch, logs=None):
        if self.frequency != "epoch" and self._count_batches(batch):
            if self._pruning_started():
                self._update_masks(self.threshold)

    def on_train_end(self, logs=None):
        self._remove_masks()

    def on_epoch_end(self, epoch, logs=None):
        if self.frequency == "epoch" and self._pruning_started():
            self._update_masks(self.threshold)
        if logs is not None:
            logs.update(self.figures())

    def figures(self):
        """Returns the figures written to `logs`: `sparsity` and `alive_units`."""
        zeros = total = alive = 0
        pairs_of = {}
        if self.model is not None:
            _backend.sync(self.model)
        for layer, layout, variable in self._weights:
            value = np.asarray(variable.numpy())
            zeros += value.size - np.count_nonzero(value)
            total += value.size
            pairs_of.setdefault(id(layer), (layer, []))[1].append((layout, value))
        for layer, pairs in pairs_of.values():
            # The report's units: an LSTM's live columns in either kernel, a layer's live heads.
            units = layer_rules.rule_for(layer).alive_sides(layer, pairs, 0.0)[1]
            alive += int(np.count_nonzero(units))
        return {"sparsity": zeros / max(total, 1), "alive_units": alive}

    def _count_batches(self, batch):
        """Counts the batches up to index `batch`; True if a multiple of `frequency` was passed.

        With `steps_per_execution=k` Keras calls the batch hook once per `k`
        batches, with `batch` the index of the execution's last batch; a
        shorter last execution still reports `first + k - 1`, so the count is
        clipped to the epoch's length (when Keras knows it: not for a dataset
        of unknown length without `steps_per_epoch`).
        """
        done = batch + 1
        steps = (self.params or {}).get("steps")
        if steps:
            done = min(done, steps)
        before = self._batches_seen
        self._batches_seen += max(done - self._epoch_batches_done, 0)
        self._epoch_batches_done = done
        return self._batches_seen // self.frequency > before // self.frequency

    def _pruning_started(self):
        return self._epoch >= self.warmup_epochs

    def _update_masks(self, threshold):
        """Recomputes the masks (pruning at `threshold` unless None) and applies them.

        A refused event stops training: the weights stay as they were and the
        user's constraints are given back before the error leaves `fit`.
        """
        _backend.sync(self.model)  # JAX: the epoch's weights are not in the variables
        values = [np.asarray(variable.numpy()) for _, _, variable in self._weights]
        try:
            keeps = self._keep_masks(values, threshold)
        except Exception:
            self._remove_masks()
            raise
        for (_, _, variable), mask, value, keep in zip(
            self._weights, self._masks, values, keeps, strict=True
        ):
            mask.assign(keep.astype(mask.dtype))
            if not keep.all():
                variable.assign(np.where(keep, value, 0).astype(value.dtype))

    def _keep_masks(self, values, threshold):
        """The masks of the managed weights at `threshold` (None: their zeros)."""
        keeps = []
        for (layer, layout, _), value in zip(self._weights, values, strict=True):
            if threshold is None:
                keeps.append(value != 0)
                continue
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"PruneCallback found NaN or infinite weights in layer "
                    f"{layer.name!r} ({layout.attribute}); training diverged. "
                    "Lower the learning rate or the regularization strength."
                )
            keeps.append(pruning.keep_mask(value, layout, threshold, self.mode))
        if threshold is not None and self.keep_last_unit:
            keeps = pruning.keep_strongest_units(self._weights, values, keeps)
        elif threshold is not None:
            pruning.check_units_survive(self._weights, values, keeps, threshold)
        return keeps

    def _install_masks(self):
        """Creates one mask per managed weight and hooks it into the train step.

        With TensorFlow and PyTorch the mask rides on the weight's
        `constraint`, which Keras applies right after every optimizer update
        inside the train step: no extra call per batch. JAX traces variables
        into a stateless step, where a mask read by a constraint would be
        frozen at trace time: there the masks are a step hook (see
        `keras_dropneuron._backend`), passed to the jitted step on every call.

        Keras calls no hook when `fit` raises (`on_train_end` only runs when
        training ends normally), so the masks must not outlive a failed `fit`
        on their own: `_update_masks` removes them before its own errors leave
        `fit`, and for errors raised elsewhere (another callback, the train
        step, an interrupt) the model's `make_train_function`, which every
        `fit` and `train_on_batch` calls first, is wrapped on the instance
        until the masks are removed. The next training call thus gives the
        user's constraints back, and retraces without the masks, before it
        runs a step.
        """
        self._remove_masks()  # a callback reused across fits starts afresh
        strategy = getattr(self.model, "distribute_strategy", None)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self._masks = [
                keras.Variable(
                    np.ones(variable.shape),
                    dtype=variable.dtype,
                    trainable=False,
                    name=f"{variable.name}_prune_mask",
                )
                for _, _, variable in self._weights
            ]
        if _backend.backend() == "jax":
            self._step_hook = _MaskHook(self.model, self._weights, self._masks)
            _backend.add_step_hook(self.model, self._step_hook)
        else:
            for (_, _, variable), mask in zip(self._weights, self._masks, strict=True):
                self._saved_constraints.append((variable, variable.constraint))
                variable.constraint = _MaskConstraint(mask, variable.constraint)
            _retrace(self.model)
        self._next_fit_hook = _RemoveMasksFirst(self._remove_masks, self.model)

    def _remove_masks(self):
        """Gives the weights their own constraints back (the model outlives `fit`)."""
        hook = self._next_fit_hook
        if hook is None:
            return
        hook.unlink()
        self._next_fit_hook = None
        if self._step_hook is not None:
            _backend.remove_step_hook(hook.model, self._step_hook)
            self._step_hook = None
            return
        for variable, constraint in reversed(self._saved_constraints):
            variable.constraint = constraint
        self._saved_constraints = []
        _retrace(hook.model)


def _retrace(model):
    """Rebuilds the train function with the constraints now on the variables."""
    type(model).make_train_function(model, force=True)  # not through the hooks


class _RemoveMasksFirst:
    """Stands in for `model.make_train_function` while a callback's masks are on.

    Every `fit` and `train_on_batch` calls `model.make_train_function()` before
    it trains. Called while the masks (or JAX step hooks) of a callback are
    still installed, the `fit` that installed them has ended without
    `on_train_end` (it raised): `remove`, the callback's method that takes them
    off, runs first. Hooks of several callbacks form a chain through
    `previous`; each one unlinks itself when its masks are removed.
    """

    def __init__(self, remove, model):
        self.remove, self.model = remove, model
        self.previous = vars(model).get("make_train_function")
        model.make_train_function = self

    def __call__(self, force=False):
        self.remove()  # unlinks this hook
        return self.model.make_train_function(force=force)

    def unlink(self):
        """Takes this hook out of the chain that starts at the model."""
        holder, current = None, vars(self.model).get("make_train_function")
        while isinstance(current, _RemoveMasksFirst) and current is not self:
            holder, current = current, current.previous
        if current is not self:
            return
        if holder is not None:
            holder.previous = self.previous
        elif self.previous is not None:
            self.model.make_train_function = self.previous
        else:
            del self.model.make_train_function


class _MaskHook(_backend.StepHook):
    """JAX: multiplies the managed weights by their masks inside the train step."""

    def __init__(self, model, weights, masks):
        position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        # A frozen weight is not updated by the optimizer: its zeros stay.
        pairs = [
            (position[id(variable)], mask)
            for (_, _, variable), mask in zip(weights, masks, strict=True)
            if id(variable) in position
        ]
        self.positions = [i for i, _ in pairs]
        self.masks = [mask for _, mask in pairs]

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
