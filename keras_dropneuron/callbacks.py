"""PruneCallback: DropNeuron's Dropping Principle 1 inside `model.fit`."""

import keras
import numpy as np

from keras_dropneuron import (
    _backend,
    checks,
    layer_rules,
    model_utils,
    normalized_units,
    pruning,
)
from keras_dropneuron.event_schedule import EventSchedule
from keras_dropneuron.masking import WeightMasks


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
        mode: `"weight"`, `"incoming"`, `"outgoing"`, `"neuron"` (both
            groups) or `"scale"`; see `keras_dropneuron.pruning.keep_mask`. A recurrent
            unit's group spans its columns in every gate block (in a
            `Bidirectional`, per direction); an attention
            layer's units are its heads (`"incoming"` prunes whole heads).
            A unit that a BatchNormalization reads is judged with its
            `gamma` and `beta` (one group, zeroed together); `"scale"`
            prunes only such units, those with `|gamma| < threshold`
            (network slimming). Defaults to `"weight"`.
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
        threshold: float = 1e-2,
        frequency: str | int = "epoch",
        mode: str = "weight",
        layers: list[str] | None = None,
        warmup_epochs: int = 0,
        keep_last_unit: bool = False,
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
        self._schedule = EventSchedule(self.frequency, self.warmup_epochs)
        self._weight_masks = None
        self._masks_synced = False

    def get_config(self) -> dict:
        return {
            "threshold": self.threshold,
            "frequency": self.frequency,
            "mode": self.mode,
            "layers": self.layers,
            "warmup_epochs": self.warmup_epochs,
            "keep_last_unit": self.keep_last_unit,
        }

    @classmethod
    def from_config(cls, config: dict) -> keras.callbacks.Callback:
        """The callback `get_config()` describes (also for subclasses)."""
        return cls(**config)

    def on_train_begin(self, logs: dict | None = None) -> None:
        checks.check_model("model", self.model)
        layers = model_utils.select_layers(self.model, self.layers, prefer_regularized=True)
        model_utils.check_has_supported_layers(self.model, layers)
        model_utils.check_finite_weights(layers, "prune")
        self._release()  # a callback reused across fits starts afresh
        self._weight_masks = WeightMasks(
            self.model, layers, mode=self.mode, keep_last_unit=self.keep_last_unit
        )
        self._weight_masks.install()
        self._schedule.reset()
        # Masks are read from the weights at the first epoch, after callbacks
        # such as BackupAndRestore have restored them in their on_train_begin.
        self._masks_synced = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._schedule.begin_epoch(epoch)
        if not self._masks_synced:
            # A run that resumes at `epoch` (BackupAndRestore, initial_epoch) repeats
            # the pruning event that ended `epoch - 1`: a backup written by a callback
            # placed before this one holds the weights from before that event.
            resumed = self._schedule.resumes_after_event(epoch)
            self._update_masks(self.threshold if resumed else None)
            self._masks_synced = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._schedule.batch_event(batch, (self.params or {}).get("steps")):
            self._update_masks(self.threshold)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._release()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._schedule.epoch_event():
            self._update_masks(self.threshold)
        if logs is not None:
            logs.update(self.figures())

    def figures(self) -> dict:
        """Returns the figures written to `logs`: `sparsity` and `alive_units`."""
        zeros = total = alive = 0
        pairs_of = {}
        if self.model is not None:
            _backend.sync(self.model)
        weights = self._weight_masks.weights if self._weight_masks is not None else []
        partners = {}
        for layer, layout, variable in weights:
            value = np.asarray(variable.numpy())
            if isinstance(layout, normalized_units.PartnerLayout):
                # A normalization's gamma and beta: part of the units, not the layer's weights.
                partners[id(layer)] = partners.get(id(layer), False) | (value != 0)
                continue
            zeros += value.size - np.count_nonzero(value)
            total += value.size
            pairs_of.setdefault(id(layer), (layer, []))[1].append((layout, value))
        for key, (layer, pairs) in pairs_of.items():
            # The report's units: an LSTM's live columns in either kernel, a layer's live heads.
            units = layer_rules.rule_for(layer).alive_sides(layer, pairs, 0.0)[1]
            alive += int(np.count_nonzero(units | partners.get(key, False)))
        return {"sparsity": zeros / max(total, 1), "alive_units": alive}

    def _update_masks(self, threshold: float | None) -> None:
        """Recomputes the masks (pruning at `threshold` unless None) and applies them.

        A refused event stops training: the weights stay as they were and the
        user's constraints are given back before the error leaves `fit`.
        """
        masks = self._weight_masks
        values = masks.values()
        try:
            keeps = masks.keep_masks(values, threshold)
        except Exception:
            self._release()
            raise
        masks.prune(values, keeps)

    def _release(self) -> None:
        """Takes everything this callback put on the model off it (its masks)."""
        if self._weight_masks is not None:
            self._weight_masks.remove()
