"""Fine-tuning a pruned model by distillation from the original (`distill_fit`).

Keras's own `keras.distillation.Distiller` trains the student on
`alpha * label loss + (1 - alpha) * LogitsDistillation(temperature)`, the
teacher frozen. Three things are added around it here:

- Logits. `LogitsDistillation` takes logits (it applies the tempered softmax
  itself), but most classifiers end in a softmax. Softmax outputs are never
  turned back into logits with `log`: a probability that underflows to 0
  gives `-inf` and NaN gradients. Instead both models are distilled on their
  exact pre-softmax logits: the teacher is a private frozen copy of the
  original whose output layer computes logits; the student's output layer
  computes logits only while the Distiller trains (its variables are the
  student's own, nothing is copied) and is a softmax again before every
  callback runs and when `distill_fit` returns. The label loss is the
  student's compiled loss on `softmax(logits)`, the model's real output, so
  it is the loss that `fit` would minimize.
- Pruned weights stay exactly zero: every weight of the student that is zero
  when fine-tuning starts is put back to zero after every training batch.
- Callbacks see the student, not the Distiller.
"""

import contextlib
from collections.abc import Iterator

import keras
import numpy as np

from keras_dropneuron import _backend, checks, cloning, compiling

# The activations whose inputs are logits, and the output activations that are logits.
_SOFTMAX = keras.activations.softmax
_LINEAR = (None, keras.activations.linear)


def check_distill_arguments(temperature: object, alpha: object) -> tuple[float, float]:
    """`(temperature, alpha)` as floats: a temperature > 0 and an `alpha` in [0, 1].

    Raises:
        TypeError: If either is not a real number.
        ValueError: If `temperature <= 0` or `alpha` is outside [0, 1] (or
            either is NaN or infinite).
    """
    return (
        check_temperature("distill_temperature", temperature),
        check_alpha("distill_alpha", alpha),
    )


def check_temperature(name: str, value: object) -> float:
    """`value` as a float, refused unless it is finite and > 0 (as in `checks`)."""
    return _check_float_in(name, value, lambda v: v > 0, "a finite float > 0")


def check_alpha(name: str, value: object) -> float:
    """`value` as a float, refused unless it is in [0, 1] (as in `checks`)."""
    return _check_float_in(name, value, lambda v: v <= 1, "a float in [0, 1]")


def _check_float_in(name: str, value: object, inside: object, expected: str) -> float:
    try:
        checked = checks.check_non_negative_float(name, value)
    except ValueError:
        checked = None
    if checked is None or not inside(checked):
        raise checks.invalid_value(name, expected, value)
    return checked


def distill_fit(
    student: keras.Model,
    teacher: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    temperature: float = 2.0,
    alpha: float = 0.5,
    batch_size: int = 128,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | str = 0,
) -> keras.callbacks.History:
    """Trains `student` on labels and on `teacher`'s logits; its zero weights stay zero.

    The student's loss is `alpha * label_loss + (1 - alpha) * T**2 *
    KL(softmax(teacher_logits / T) || softmax(student_logits / T))`
    (Keras's `Distiller` with `LogitsDistillation(temperature=T)`), where
    `label_loss` is the loss the student is compiled with. A model that ends
    in a softmax (a `softmax` activation or a `Softmax` layer) is distilled
    on its pre-softmax logits; one whose output layer has no activation is
    taken to output logits (as with `from_logits=True`). Regularization
    losses are not part of the `Distiller`'s loss (the DropNeuron penalties
    are released during `prune_to_budget`'s fine-tuning anyway).

    Args:
        student: A compiled Sequential or Functional model with one output;
            trained in place with its own optimizer, and returned to its
            normal form (no wrapper, softmax output).
        teacher: A model with the student's output shape (typically the
            original, unpruned model). Never modified: a frozen copy teaches.
        x, y: The training data.
        epochs: Epochs to train. Defaults to `1`.
        temperature: Softmax temperature of the distillation loss, > 0.
            Defaults to `2.0`.
        alpha: Weight of the label loss, in [0, 1] (the distillation loss
            gets `1 - alpha`). Defaults to `0.5`.
        batch_size: Defaults to `128`.
        callbacks: Callbacks of the `fit`; they see the student as their
            model. Defaults to `None`.
        verbose: Passed to `fit`. Defaults to `0`.

    Returns:
        The `History` of the Distiller's `fit` (`loss`, `student_loss`,
        `distillation_loss`, `total_loss`, and your callbacks' figures).

    Raises:
        TypeError, ValueError: On a bad temperature or alpha, a student that
            is not compiled, a teacher whose output shape differs from the
            student's, or an output that is not a softmax or logits.
    """
    temperature = check_temperature("temperature", temperature)
    alpha = check_alpha("alpha", alpha)
    student_layer, student_kind = check_distill_models(student, teacher)
    label_loss = _label_loss(student, student_kind)
    frozen = _logits_teacher(teacher)
    student.stop_training = False  # a callback of an earlier `fit` may have left it set
    with _as_logits(student_layer, student_kind) as restored:
        distiller = keras.distillation.Distiller(
            teacher=frozen,
            student=student,
            distillation_losses=distillation_loss(temperature),
            student_loss_weight=alpha,
        )
        distiller.compile(
            optimizer=student.optimizer,  # continues the student's own optimizer state
            loss=label_loss,
            jit_compile=student.jit_compile,
            steps_per_execution=student.steps_per_execution,
            run_eagerly=student.run_eagerly,
        )
        hold = _HoldZeros(student)
        wrapped = [_SeesStudent(c, student, distiller, restored) for c in callbacks or []]
        return distiller.fit(
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=[_SeesStudent(hold, student, distiller, restored), *wrapped],
            verbose=verbose,
        )


def distillation_loss(temperature: float) -> keras.distillation.LogitsDistillation:
    """`T**2 * KL(softmax(teacher / T) || softmax(student / T))`, batch mean, on logits.

    The `KLDivergence` instance is needed: with its default, the string
    `"kl_divergence"`, Keras 3.15's `LogitsDistillation` gets the plain
    function, misses its own softmax branch (an `isinstance` test) and
    computes the KL of the clipped raw logits instead.
    """
    return keras.distillation.LogitsDistillation(
        temperature=temperature, loss=keras.losses.KLDivergence()
    )


def check_distill_models(
    student: keras.Model, teacher: keras.Model
) -> tuple[keras.layers.Layer, str]:
    """Refuses a teacher that does not fit the student; `(student's output layer, its kind)`."""
    checks.check_model("student", student)
    checks.check_model("teacher", teacher)
    for name, model in (("student", student), ("teacher", teacher)):
        if len(model.outputs) != 1:
            raise checks.invalid_value(
                name,
                "a model with one output",
                f"<model {model.name!r} with {len(model.outputs)} outputs>",
            )
    student_shape = tuple(student.outputs[0].shape)
    teacher_shape = tuple(teacher.outputs[0].shape)
    if student_shape != teacher_shape:
        raise ValueError(
            "Invalid value for argument `teacher`: expected a model whose output shape is "
            f"the student's, {student_shape}. Received: teacher={teacher.name!r} with output "
            f"shape {teacher_shape}"
        )
    output_logits("teacher", teacher)
    return output_logits("student", student)


def _output_layer(model: keras.Model) -> object:
    """The operation that computes `model`'s output (inside nested models)."""
    operation = model
    while isinstance(operation, keras.Model):
        operation = operation.outputs[0]._keras_history.operation
    return operation


def output_logits(name: str, model: keras.Model) -> tuple[keras.layers.Layer, str]:
    """`(output layer, "softmax" or "logits")`; refuses outputs that are neither."""
    layer = _output_layer(model)
    last_axis = ((-1,), (len(model.outputs[0].shape) - 1,))
    if isinstance(layer, keras.layers.Softmax) and tuple(np.ravel(layer.axis)) in last_axis:
        return layer, "softmax"
    activation = getattr(layer, "activation", "none")
    if activation is _SOFTMAX:
        return layer, "softmax"
    if activation in _LINEAR and model.outputs[0].shape[-1] not in (None, 1):
        return layer, "logits"
    what = getattr(activation, "__name__", type(layer).__name__)
    raise ValueError(
        f"Invalid value for argument `{name}`: expected a model whose output is class "
        "scores, a softmax over the last axis or logits (no activation, more than one "
        f"class), for logits distillation. Received: {name}={model.name!r} whose output "
        f"layer {layer.name!r} ends in {what} with output shape {model.outputs[0].shape}"
    )


def _set_logits(layer: keras.layers.Layer, logits: bool) -> None:
    """Makes a softmax output layer compute its logits (`True`) or its softmax again."""
    if isinstance(layer, keras.layers.Softmax):
        # The class's `call` is the softmax; an instance attribute shadows it.
        if logits:
            object.__setattr__(layer, "call", _identity)
        else:
            vars(layer).pop("call", None)
        return
    if logits:
        vars(layer)["_dropneuron_activation"] = layer.activation
        object.__setattr__(layer, "activation", keras.activations.linear)
    else:
        object.__setattr__(layer, "activation", vars(layer).pop("_dropneuron_activation"))


@contextlib.contextmanager
def _as_logits(layer: keras.layers.Layer, kind: str) -> Iterator[object]:
    """Makes a softmax output layer compute logits for the block.

    Yields a function returning a context manager that gives the layer its
    softmax back inside it, for callbacks: the student they see is the
    user's model.
    """
    if kind == "logits":
        yield contextlib.nullcontext
        return

    @contextlib.contextmanager
    def restored():
        _set_logits(layer, False)
        try:
            yield
        finally:
            _set_logits(layer, True)

    _set_logits(layer, True)
    try:
        yield restored
    finally:
        _set_logits(layer, False)


def _identity(inputs, mask=None):
    return inputs


def _logits_teacher(teacher: keras.Model) -> keras.Model:
    """A frozen copy of `teacher` that outputs its logits; `teacher` is not touched."""
    copy = cloning.clone_model(teacher)
    copy.set_weights(teacher.get_weights())
    layer, kind = output_logits("teacher", copy)
    if kind == "softmax":
        _set_logits(layer, True)  # for good: the copy is ours
    copy.trainable = False
    return copy


def _label_loss(student: keras.Model, kind: str) -> object:
    """The student's compiled loss, on `softmax(logits)` for a softmax output."""
    loss = compiling.compiled_loss(student)
    if isinstance(loss, dict) and len(loss) == 1:
        loss = next(iter(loss.values()))
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if loss is None:
        raise ValueError(
            "Invalid value for argument `student`: expected a compiled model (its loss is "
            f"the label loss). Received: student={student.name!r}, not compiled with a loss"
        )
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if kind == "logits":
        return loss

    def label_loss(y_true, logits):
        return loss(y_true, keras.ops.softmax(logits, axis=-1))

    return label_loss


class _HoldZeros(keras.callbacks.Callback):
    """Sets every weight that is zero when training starts back to zero after each batch."""

    def __init__(self, student: keras.Model):
        super().__init__()
        self.masks = []
        for variable in student.trainable_variables:
            mask = np.asarray(keras.ops.convert_to_numpy(variable.value)) != 0
            if not mask.all():
                mask = keras.ops.convert_to_tensor(mask, dtype=variable.dtype)
                self.masks.append((variable, mask))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for variable, mask in self.masks:
            variable.assign(keras.ops.multiply(variable.value, mask))


class _SeesStudent(keras.callbacks.Callback):
    """Runs `callback` with the student as its model (softmax output) in a Distiller's `fit`."""

    def __init__(self, callback, student, distiller, restored):
        super().__init__()
        self.callback = callback
        self.student = student
        self.distiller = distiller
        self.restored = restored

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(self.student)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def _forward(self, hook, *args, **kwargs):
        _backend.sync(self.distiller)  # JAX: the student's variables, as trained so far
        with self.restored():
            getattr(self.callback, hook)(*args, **kwargs)
        if getattr(self.student, "stop_training", False):
            self.distiller.stop_training = True


def _forwarding(hook):
    def forward(self, *args, **kwargs):
        self._forward(hook, *args, **kwargs)

    forward.__name__ = hook
    return forward


for _hook in [
    f"on_{when}_{what}"
    for when in ("train", "test", "predict")
    for what in ("begin", "end", "batch_begin", "batch_end")
] + ["on_epoch_begin", "on_epoch_end"]:
    setattr(_SeesStudent, _hook, _forwarding(_hook))
