"""Proximal group shrinkage: exact zeros during training, without a threshold."""

import keras
from keras import ops

from keras_dropneuron import checks, model_utils, pruning


def _shrink(variable, unit_axes, amount):
    """`w_g <- max(0, 1 - amount / ||w_g||) * w_g` for every group of `unit_axes`."""
    rank = len(variable.shape)
    units = {a % rank for a in unit_axes}
    reduce_axes = tuple(a for a in range(rank) if a not in units)
    value = ops.convert_to_tensor(variable)
    norms = ops.sqrt(ops.sum(ops.square(value), axis=reduce_axes, keepdims=True))
    scale = ops.maximum(1.0 - amount / ops.maximum(norms, 1e-12), 0.0)
    variable.assign(value * ops.cast(scale, value.dtype))


class ProximalGroupShrinkage(keras.callbacks.Callback):
    """Applies the group-lasso proximal step after every optimizer step.

    For every incoming group (strength `li`) and outgoing group (strength `lo`)
    of the managed layers: `w_g <- max(0, 1 - step * lambda / ||w_g||) * w_g`,
    with `step` the optimizer's current learning rate. This is proximal
    gradient descent on the Li/Lo penalties: groups reach exact zeros during
    training and no pruning threshold is needed. Use it *instead of* the
    `LiRegularizer`/`LoRegularizer` penalties, not on top of them.

    Args:
        li: Incoming-group strength. Defaults to `0.0`.
        lo: Outgoing-group strength. Defaults to `0.0`.
        layers: A list of the layers to shrink, by name or as layer objects.
            Defaults to `None`: every supported layer except the model's last
            one (whose incoming groups are the outputs).

    Raises:
        TypeError: If `li` or `lo` is not a number, or `layers` is not a list
            of layer names or layers (a single name such as `"h1"` is refused:
            pass `["h1"]`).
        ValueError: If `li` or `lo` is negative, NaN or infinite; when
            training starts, for layers that the model does not have.

    Example:

    >>> model.fit(x, y, callbacks=[ProximalGroupShrinkage(li=1e-4, lo=1e-4)])
    """

    def __init__(self, li=0.0, lo=0.0, layers=None):
        super().__init__()
        self.li = checks.check_non_negative_float("li", li)
        self.lo = checks.check_non_negative_float("lo", lo)
        self.layers = checks.check_layers("layers", layers)
        self._step_fn = None

    def on_train_begin(self, logs=None):
        checks.check_model("model", self.model)
        layers = model_utils.select_layers(self.model, self.layers)
        if self.layers is None:
            layers = layers[:-1]
        weights = pruning.managed_weights(layers)
        optimizer = self.model.optimizer

        def step():
            lr = ops.cast(optimizer.learning_rate, "float32")
            for _, layout, variable in weights:
                if self.li:
                    _shrink(variable, layout.output_axes, lr * self.li)
                if self.lo:
                    _shrink(variable, layout.input_axes, lr * self.lo)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            step = tf.function(step, autograph=False)
        self._step_fn = step

    def on_train_batch_end(self, batch, logs=None):
        self._step_fn()
