"""Proximal group shrinkage: exact zeros during training, without a threshold."""

import keras
from keras import ops

from keras_dropneuron import _backend, checks, model_utils
from keras_dropneuron._group_lasso import gate_view
from keras_dropneuron.masking import ManagedWeights, trainable_positions


def _shrunk(value, unit_axes, amount, gates=1):
    """`w_g <- max(0, 1 - amount / ||w_g||) * w_g` for every group of `unit_axes`.

    With `gates > 1` the groups are taken on the `(gates, units)` view of the
    last axis (a recurrent unit's columns in every gate block).
    """
    shape = tuple(value.shape)
    view, _, reduce_axes = gate_view(shape, unit_axes, gates)
    grouped = ops.reshape(value, view) if gates > 1 else value
    norms = ops.sqrt(ops.sum(ops.square(grouped), axis=reduce_axes, keepdims=True))
    scale = ops.maximum(1.0 - ops.cast(amount, norms.dtype) / ops.maximum(norms, 1e-12), 0.0)
    grouped = grouped * ops.cast(scale, value.dtype)
    return ops.reshape(grouped, shape) if gates > 1 else grouped


def _proximal_step(value, layout, li, lo, lr):
    """Both shrinkages of one weight: incoming groups (`li`), then outgoing (`lo`)."""
    if li:
        value = _shrunk(value, layout.output_axes, lr * li, layout.gates)
    if lo:
        value = _shrunk(value, layout.input_axes, lr * lo, layout.gates)
    return value


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class ProximalGroupShrinkage(keras.callbacks.Callback):
    """Applies the group-lasso proximal step after every optimizer step.

    For every incoming group (strength `li`) and outgoing group (strength `lo`)
    of the managed layers (`keras_dropneuron.pruning.keep_mask` lists them:
    a recurrent unit's group spans every gate block, each direction's in a
    `Bidirectional`, a head is an attention
    layer's unit): `w_g <- max(0, 1 - step * lambda / ||w_g||) * w_g`,
    with `step` the optimizer's current learning rate. This is proximal
    gradient descent on the Li/Lo penalties: groups reach exact zeros during
    training and no pruning threshold is needed. Use it *instead of* the
    `LiRegularizer`/`LoRegularizer` penalties, not on top of them.

    The step is compiled on every backend: with TensorFlow a `tf.function`
    called after each batch; with JAX it runs inside the jitted train step,
    after the optimizer update (`on_train_batch_end` then does nothing); with
    PyTorch after each batch, through `torch.compile` when the model trains
    with `jit_compile=True`, else eagerly like Keras's own train step.

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

    def __init__(self, li: float = 0.0, lo: float = 0.0, layers: list | None = None):
        super().__init__()
        self.li = checks.check_non_negative_float("li", li)
        self.lo = checks.check_non_negative_float("lo", lo)
        self.layers = checks.check_layers("layers", layers)
        self._step_fn = None
        self._managed = None

    def get_config(self) -> dict:
        layers = self.layers
        if layers is not None:  # layer objects by name, so the config is plain values
            layers = [item if isinstance(item, str) else item.name for item in layers]
        return {"li": self.li, "lo": self.lo, "layers": layers}

    @classmethod
    def from_config(cls, config: dict) -> keras.callbacks.Callback:
        """The callback `get_config()` describes (also for subclasses)."""
        return cls(**config)

    def on_train_begin(self, logs: dict | None = None) -> None:
        checks.check_model("model", self.model)
        layers = model_utils.select_layers(self.model, self.layers)
        if self.layers is None:
            layers = layers[:-1]
        self._remove_hook()  # a callback reused across fits starts afresh
        self._managed = ManagedWeights(self.model, layers)
        if _backend.backend() == "jax":
            self._step_fn = None
            # A failed fit leaves the hook in the train function: the next one removes it.
            self._managed.add_step_hook(
                _ShrinkHook(self.model, self._managed.weights, self.li, self.lo)
            )
            return
        weights = self._managed.weights
        optimizer = self.model.optimizer

        def step():
            lr = ops.cast(optimizer.learning_rate, "float32")
            for _, layout, variable in weights:
                value = ops.convert_to_tensor(variable)
                variable.assign(_proximal_step(value, layout, self.li, self.lo, lr))

        self._step_fn = _backend.compile_function(step, self.model)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._step_fn is not None:
            self._step_fn()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._remove_hook()

    def _remove_hook(self) -> None:
        """Takes the JAX step hook out of the train function (Keras's own again)."""
        if self._managed is not None:
            self._managed.remove()


class _ShrinkHook(_backend.StepHook):
    """JAX: the proximal step inside the train step, at the step's learning rate."""

    def __init__(self, model, weights, li, lo):
        self.optimizer = model.optimizer
        self.li, self.lo = li, lo
        self.targets = [(i, layout) for i, (_, layout, _) in trainable_positions(model, weights)]

    def apply(self, trainable, optimizer_values, inputs):
        # The learning rate (or schedule) as the optimizer's updated state gives it.
        mapping = list(zip(self.optimizer.variables, optimizer_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            lr = ops.cast(self.optimizer.learning_rate, "float32")
        for i, layout in self.targets:
            trainable[i] = _proximal_step(trainable[i], layout, self.li, self.lo, lr)
        return trainable
