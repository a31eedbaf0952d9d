"""PruneCallback: DropNeuron's Dropping Principle 1 inside `model.fit`."""

import numbers

import keras
import numpy as np
from keras import ops

from keras_dropneuron import model_utils, pruning


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class PruneCallback(keras.callbacks.Callback):
    """Zeroes sub-threshold weights during training and keeps them at zero.

    At every pruning event (by default the end of each epoch) every weight with
    `|w| < threshold` in the managed layers is set to zero, or, in a group mode,
    every incoming or outgoing group whose L2 norm is below `threshold`. Pruned
    weights are masked again after every training batch, so momentum in the
    optimizer cannot revive them (with `steps_per_execution=n`, Keras calls
    batch hooks every `n` steps, so masks are re-applied every `n` steps and
    pruned weights may drift for up to `n - 1` steps in between; the next
    application zeroes them again). Weights that are already exactly zero when
    training starts (for example after a restart from a checkpoint) count as
    pruned, which makes the masks survive `BackupAndRestore` and
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
            to prune every `n` training batches. Defaults to `"epoch"`.
        mode: `"weight"`, `"incoming"`, `"outgoing"` or `"neuron"` (both
            groups); see `keras_dropneuron.pruning.keep_mask`.
            Defaults to `"weight"`.
        layers: Names of the layers to manage. Defaults to `None`: the layers
            that carry a DropNeuron regularizer, or every supported layer when
            none do.
        warmup_epochs: Number of epochs to train before the first pruning
            event. Defaults to `0`.

    Raises:
        TypeError, ValueError: On invalid arguments (checked here); when
            training starts, for layers that the model does not have, models
            without supported layers or weights that are not finite; at a
            pruning event, for weights that turned NaN or a threshold that
            would remove every unit of a layer (the event is refused and
            training stops with the weights as they were, see
            `keras_dropneuron.pruning.check_units_survive`).

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
    ):
        super().__init__()
        self.threshold = pruning.check_threshold(threshold)
        if frequency != "epoch" and (
            isinstance(frequency, bool)
            or not isinstance(frequency, numbers.Integral)
            or frequency < 1
        ):
            raise ValueError(
                "Invalid value for argument `frequency`: expected 'epoch' or an int "
                f">= 1 (a number of batches). Received: frequency={frequency!r}"
            )
        self.frequency = frequency
        self.mode = pruning.check_mode(mode)
        if layers is not None and (
            isinstance(layers, str) or not all(isinstance(name, str) for name in layers)
        ):
            raise TypeError(
                "Invalid type for argument `layers`: expected None or a list of layer "
                f"names. Received: layers={layers!r}"
            )
        self.layers = None if layers is None else list(layers)
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, numbers.Integral)
            or warmup_epochs < 0
        ):
            raise ValueError(
                "Invalid value for argument `warmup_epochs`: expected an int >= 0. "
                f"Received: warmup_epochs={warmup_epochs!r}"
            )
        self.warmup_epochs = int(warmup_epochs)
        self._weights = []
        self._masks = {}
        self._epoch = 0
        self._batches_seen = 0
        self._masks_synced = False
        self._apply_fn = None

    def get_config(self):
        return {
            "threshold": self.threshold,
            "frequency": self.frequency,
            "mode": self.mode,
            "layers": self.layers,
            "warmup_epochs": self.warmup_epochs,
        }

    def on_train_begin(self, logs=None):
        model_utils.check_model(self.model)
        layers = model_utils.select_layers(self.model, self.layers, prefer_regularized=True)
        model_utils.check_has_supported_layers(self.model, layers)
        model_utils.check_finite_weights(layers, "prune")
        self._weights = pruning.managed_weights(layers)
        self._masks = {}
        self._apply_fn = None
        self._batches_seen = 0
        # Masks are read from the weights at the first epoch, after callbacks
        # such as BackupAndRestore have restored them in their on_train_begin.
        self._masks_synced = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if not self._masks_synced:
            # A run that resumes at `epoch` (BackupAndRestore, initial_epoch) repeats
            # the pruning event that ended `epoch - 1`: a backup written by a callback
            # placed before this one holds the weights from before that event.
            resumed = epoch > 0 and self.frequency == "epoch" and epoch - 1 >= self.warmup_epochs
            self._update_masks(self.threshold if resumed else None)
            self._masks_synced = True

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        if self.frequency != "epoch" and self._batches_seen % self.frequency == 0:
            if self._pruning_started():
                self._update_masks(self.threshold)
                return
        if self._apply_fn is not None:
            self._apply_fn()

    def on_epoch_end(self, epoch, logs=None):
        if self.frequency == "epoch" and self._pruning_started():
            self._update_masks(self.threshold)
        if logs is not None:
            logs.update(self.figures())

    def figures(self):
        """Returns the figures written to `logs`: `sparsity` and `alive_units`."""
        zeros = total = alive = 0
        last_layout_of = {}
        for layer, layout, variable in self._weights:
            value = np.asarray(variable.numpy())
            zeros += value.size - np.count_nonzero(value)
            total += value.size
            last_layout_of[id(layer)] = (layout, value)
        for layout, value in last_layout_of.values():
            alive += int(np.count_nonzero(pruning.group_alive(value, layout.output_axes)))
        return {"sparsity": zeros / max(total, 1), "alive_units": alive}

    def _pruning_started(self):
        return self._epoch >= self.warmup_epochs

    def _update_masks(self, threshold):
        """Recomputes the masks (pruning at `threshold` unless None) and applies them."""
        values = [np.asarray(variable.numpy()) for _, _, variable in self._weights]
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
        if threshold is not None:
            pruning.check_units_survive(self._weights, values, keeps, threshold)
        for (_, _, variable), value, keep in zip(self._weights, values, keeps, strict=True):
            if keep.all():
                self._masks.pop(id(variable), None)
            else:
                self._masks[id(variable)] = (variable, keep)
                variable.assign(np.where(keep, value, 0).astype(value.dtype))
        self._apply_fn = self._make_apply_fn() if self._masks else None

    def _make_apply_fn(self):
        pairs = [
            (variable, ops.convert_to_tensor(keep.astype(variable.dtype)))
            for variable, keep in self._masks.values()
        ]

        def apply_masks():
            for variable, mask in pairs:
                variable.assign(ops.multiply(variable, mask))

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # One graph call per batch instead of eager ops.

            return tf.function(apply_masks, autograph=False)
        return apply_masks
