"""Training-method options of the frontier sweeps, inside the group-lasso family.

Each option is a number, so that `keras-dropneuron frontier --grid KEY=V1,V2`
can sweep it; `0` (or absent) is the set-up's own recipe, and a configuration
stores only the options that change it:

- `learning_rate`: the penalized phase's learning rate, > 0 (fine-tuning keeps
  its fraction `finetune_lr_factor` of it).
- `cosine_lr`: `1` decays the learning rate of each phase (penalized training,
  fine-tuning) to zero on a half cosine.
- `sgd_momentum`: `m > 0` trains with SGD and momentum `m` instead of Adam.
- `proximal`: `1` replaces the penalties' gradients by proximal group
  shrinkage (`ProximalGroupShrinkage`, strengths `prox_li` / `prox_lo`; the
  other strengths are then unused); under SGD the proximal step is the
  penalty's own step, `lr * strength`.
- `ramp_epochs`: the penalties grow linearly from `1 / n` of their strength
  to all of it over the first `n` epochs (a warm-up).
- `cycles`: `k > 1` splits the penalized phase into `k` parts and prunes with
  the automatic threshold after each (prune-and-retrain cycles; needs
  `auto_threshold`).
- `reweight`: `1` is the reweighted group lasso: after every epoch each group's
  strength becomes `strength * mean_norm / (norm + 0.1 * mean_norm)` (weak
  groups are pushed harder, strong ones spared), on the Dense layers.

`ramp_epochs` and `reweight` change the penalties through variables that a
jitted JAX step would freeze: they need TensorFlow or PyTorch. A method becomes
a library option only if it moves the frontier (`docs/results.md`, "Compression frontier",
says which did).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_dropneuron.budget import penalty_scale
from keras_dropneuron.proximal import ProximalGroupShrinkage
from keras_dropneuron.regularizers import DropNeuronRegularizer

OPTIONS = (
    "learning_rate",
    "cosine_lr",
    "sgd_momentum",
    "proximal",
    "ramp_epochs",
    "cycles",
    "reweight",
)
WHOLE = ("cosine_lr", "proximal", "ramp_epochs", "cycles", "reweight")  # integer-valued


def _check_option(key: str, value: object) -> None:
    """Raises a `ValueError` naming `training[key]` if it is not a valid option value."""
    if key not in OPTIONS:
        raise ValueError(
            f"Invalid key in argument `training`: expected one of {list(OPTIONS)}. "
            f"Received: {key!r}"
        )
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        expected = "a finite number >= 0"
    elif key in WHOLE and value != int(value):
        expected = "a whole number"
    elif key == "sgd_momentum" and value >= 1:
        expected = "a number in [0, 1)"
    elif key == "learning_rate" and value == 0:
        expected = "a number > 0"
    else:
        return
    raise ValueError(
        f"Invalid value for `training[{key!r}]`: expected {expected}. Received: {value!r}"
    )


def check_training(training: dict | None, auto_threshold: float | None = None) -> dict:
    """Returns the method options that change the recipe, after checking them.

    Args:
        training: Options `{key: number}` of `OPTIONS`, or `None`.
        auto_threshold: The run's automatic-threshold tolerance:
            prune-and-retrain cycles need it. Defaults to `None`.

    Returns:
        The options that change the recipe (`learning_rate` always, the
        others where non-zero, `cycles` where above 1).

    Raises:
        ValueError: For an unknown key, a value that is not a finite number
            >= 0 (a whole number for the options of `WHOLE`, below 1 for
            `sgd_momentum`, above 0 for `learning_rate`), cycles without
            `auto_threshold`, `proximal` with an option that acts on the
            penalties, or those options on JAX.

    Example:

    >>> check_training({"cosine_lr": 1, "cycles": 1})
    {'cosine_lr': 1}
    """
    training = dict(training or {})
    for key, value in training.items():
        _check_option(key, value)
    changed = {k: v for k, v in training.items() if k == "learning_rate" or v}
    if changed.get("cycles") == 1:
        del changed["cycles"]  # one part is the recipe
    if changed.get("cycles") and auto_threshold is None:
        raise ValueError(
            "Invalid `training`: cycles > 1 (prune-and-retrain cycles) needs auto_threshold. "
            f"Received: {training!r}"
        )
    if changed.get("proximal"):
        on_penalties = sorted({"ramp_epochs", "reweight"} & set(changed))
        if on_penalties:
            raise ValueError(
                f"Invalid `training`: {on_penalties} act on the penalties, which `proximal` "
                f"replaces. Received: {training!r}"
            )
    if {"ramp_epochs", "reweight"} & set(changed) and keras.backend.backend() == "jax":
        raise ValueError(
            "Invalid `training`: ramp_epochs and reweight need TensorFlow or PyTorch (a "
            f"jitted JAX step freezes their variables). Received: {training!r}"
        )
    return changed


def proximal_steps(model: keras.Model, penalties: dict) -> list[ProximalGroupShrinkage]:
    """The proximal callbacks: `prox_li` / `prox_lo`, and `prox_input_lo` on the first layer.

    Adam's steps do not scale with the gradient, so the proximal step has its
    own strengths rather than the penalties' ones.

    Args:
        model: The model to train.
        penalties: Strengths with `prox_li`, `prox_lo` and optionally
            `prox_input_lo` (`None`: `prox_lo`).

    Returns:
        One `ProximalGroupShrinkage` for every layer, or, with
        `prox_input_lo`, one for the first layer and one for the others but
        the last.
    """
    strengths = {"li": penalties["prox_li"], "lo": penalties["prox_lo"]}
    if penalties.get("prox_input_lo") is None:
        return [ProximalGroupShrinkage(**strengths)]
    # The pixels' own proximal strength: the first layer's rows apart.
    first, *middle = [layer.name for layer in model.layers if layer.weights][:-1]
    steps = [ProximalGroupShrinkage(strengths["li"], penalties["prox_input_lo"], layers=[first])]
    return steps + ([ProximalGroupShrinkage(**strengths, layers=middle)] if middle else [])


def optimizer(training: dict, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    """The optimizer of one training phase: Adam, or SGD with `sgd_momentum`.

    Args:
        training: Options of `check_training`.
        learning_rate: The phase's learning rate.
        steps: The phase's batches, over which `cosine_lr` decays the rate to 0.

    Returns:
        A new optimizer.
    """
    rate = learning_rate
    if training.get("cosine_lr"):
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(int(steps), 1))
    momentum = training.get("sgd_momentum", 0.0)
    if momentum:
        return keras.optimizers.SGD(rate, momentum=momentum)
    return keras.optimizers.Adam(rate)


class PenaltyRamp(keras.callbacks.Callback):
    """Linear warm-up of the penalties: `(epoch + 1) / epochs` of them, then all.

    Every DropNeuron penalty of the model is multiplied by one variable
    (budget's wrapper). TensorFlow and PyTorch read it in the train step; on
    JAX the traced step would freeze it, so `check_training` refuses
    `ramp_epochs` there.

    Args:
        epochs: Epochs of the warm-up, an int >= 1.

    Example:

    >>> model.fit(x, y, epochs=10, callbacks=[PruneCallback(), PenaltyRamp(3)])
    """

    variable = None

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def scale_at(self, epoch: int) -> float:
        """The penalties' factor during `epoch` (0-based)."""
        return min(1.0, (epoch + 1) / self.epochs)

    def on_train_begin(self, logs=None):
        # One variable for every fit: a train function traced in an earlier fit
        # (prune-and-retrain cycles) keeps reading it.
        if self.variable is None:
            self.variable = keras.Variable(
                self.scale_at(0), dtype="float32", trainable=False, name="penalty_ramp"
            )
        self.wrapped = [(v, v.regularizer) for v in penalty_scale.penalized_variables(self.model)]
        for variable, regularizer in self.wrapped:
            variable.regularizer = penalty_scale.ScaledPenalty(regularizer, self.variable)

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(self.scale_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["penalty_scale"] = float(self.scale_at(epoch))

    def on_train_end(self, logs=None):
        for variable, regularizer in self.wrapped:
            variable.regularizer = regularizer


class ReweightedGroupLasso(keras.callbacks.Callback):
    """Reweighted group lasso on Dense kernels penalized by `DropNeuronRegularizer`.

    Replaces each such kernel's penalty with
    `li * sum_j c_j ||W[:, j]|| + lo * sum_i r_i ||W[i, :]||`, the weights `c`
    and `r` (variables) recomputed after every epoch from the current norms:
    `c_j = m / (n_j + 0.1 m)`, `m` the mean norm of the groups still alive, so
    a group near zero is pushed about ten times harder than an average one.

    Example:

    >>> model.fit(x, y, epochs=10, callbacks=[PruneCallback(), ReweightedGroupLasso()])
    """

    EPSILON = 0.1

    def __init__(self) -> None:
        super().__init__()
        self.weights = {}

    def on_train_begin(self, logs=None):
        self.targets = []
        for layer in self.model.layers:
            regularizer = getattr(layer, "kernel_regularizer", None)
            kernel = getattr(layer, "kernel", None)
            if not isinstance(regularizer, DropNeuronRegularizer) or kernel is None:
                continue
            plain = regularizer.gates == 1 and not (regularizer.l1 or regularizer.l2)
            if len(kernel.shape) != 2 or not plain or regularizer.scale_by_group_size:
                continue
            if id(kernel) not in self.weights:  # kept across fits, like PenaltyRamp's
                self.weights[id(kernel)] = tuple(
                    keras.Variable(np.ones(n, "float32"), trainable=False) for n in kernel.shape
                )
            rows, columns = self.weights[id(kernel)]
            original = kernel.regularizer
            kernel.regularizer = _Reweighted(regularizer.li, regularizer.lo, columns, rows)
            self.targets.append((kernel, original, columns, rows))

    def on_epoch_end(self, epoch, logs=None):
        for kernel, _, columns, rows in self.targets:
            w = np.asarray(kernel.numpy(), "float64")
            for variable, norms in (
                (columns, np.linalg.norm(w, axis=0)),
                (rows, np.linalg.norm(w, axis=1)),
            ):
                alive = norms[norms > 0]
                mean = float(alive.mean()) if alive.size else 1.0
                variable.assign((mean / (norms + self.EPSILON * mean)).astype("float32"))

    def on_train_end(self, logs=None):
        for kernel, original, _, _ in self.targets:
            kernel.regularizer = original


class _Reweighted:
    def __init__(self, li, lo, columns, rows):
        self.li, self.lo, self.columns, self.rows = li, lo, columns, rows

    def __call__(self, w):
        squares = ops.square(w)
        # The small constant keeps the gradient finite at an all-zero group.
        incoming = ops.sqrt(ops.sum(squares, axis=0) + 1e-12)
        outgoing = ops.sqrt(ops.sum(squares, axis=1) + 1e-12)
        penalty = 0.0
        if self.li:
            penalty = penalty + self.li * ops.sum(ops.cast(self.columns, w.dtype) * incoming)
        if self.lo:
            penalty = penalty + self.lo * ops.sum(ops.cast(self.rows, w.dtype) * outgoing)
        return penalty
