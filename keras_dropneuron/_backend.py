"""What differs between the Keras backends, in one place.

TensorFlow and PyTorch train on the variables themselves: a weight's
`constraint` runs inside the train step, right after each optimizer update,
and reads other variables (the pruning masks) as they are at that moment.

JAX trains statelessly: `fit` hands the values of all variables to a jitted
step as arguments and keeps the results outside the variables for a whole
epoch (`model.jax_state_sync()` writes them back). A variable that is not in
that state, such as a mask, is read once when the step is traced and frozen
into it as a constant. So on JAX the callbacks' per-step work runs as *step
hooks*: functions of the step's new trainable values that the train function
applies inside the same jitted step, after the optimizer (and after your
constraints), with their own inputs (the masks) passed as arguments on every
call, so a step always sees the current masks and nothing is retraced when
they change. Every read or write of the weights from a callback first calls
`sync(model)`.

No module here imports TensorFlow unless the backend is TensorFlow.
"""

import contextlib
from collections.abc import Callable

import keras

from keras_dropneuron import keras_internals


def backend() -> str:
    """The name of the Keras backend: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.backend.backend()


def sync(model: keras.Model) -> None:
    """Writes the JAX trainer's in-flight state back into `model`'s variables.

    A no-op on the other backends, and on JAX outside `fit` or when already
    synced. After it, writes to the variables reach the next step: the JAX
    trainer reads the state from the variables again.
    """
    state_sync = getattr(model, "jax_state_sync", None)
    if state_sync is not None:
        state_sync()


def check_float64(what: str) -> None:
    """Refuses float64 on JAX without its x64 mode, where JAX would compute in float32.

    JAX stores and computes float64 as float32 unless its x64 mode is on (with
    a warning of its own). Our penalties promise float64 for float64 weights,
    so they say so instead of casting.

    Args:
        what: What received the float64 weight, for the message.

    Raises:
        ValueError: On JAX without its x64 mode.
    """
    if backend() != "jax":
        return
    import jax

    if not jax.config.jax_enable_x64:
        raise ValueError(
            f"{what} received a float64 weight, but JAX's x64 mode is off, so JAX would "
            "compute it in float32. Turn it on before creating the model "
            "(`jax.config.update('jax_enable_x64', True)` or the environment variable "
            "JAX_ENABLE_X64=1), or use float32 weights."
        )


def compile_function(fn: Callable[[], None], model: keras.Model) -> Callable[[], None]:
    """`fn` (no arguments; reads and assigns variables) compiled as `model`'s train step is.

    TensorFlow: a `tf.function` (always: it saves a dispatch per op). PyTorch:
    `torch.compile` when the model trains with `jit_compile=True`, else `fn`
    as it is, like Keras's own train step. JAX runs its per-step work as step
    hooks instead (see `StepHook`).
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if backend() == "torch" and model.jit_compile and not model.run_eagerly:
        import torch

        return torch.compile(fn)
    return fn


class StepHook:
    """A function applied inside the JAX train step, after the optimizer.

    Subclasses implement `inputs()` (the arrays passed to the step on every
    call, read then) and `apply(trainable, optimizer_values, inputs)`, which
    returns the new list of trainable values (aligned with
    `model.trainable_variables`). `optimizer_values` are the optimizer's
    variables after the update, aligned with `model.optimizer.variables`.
    `bind(inputs)` may return a context manager that the step enters around
    Keras's own step (loss, gradients, optimizer), e.g. to make a variable
    outside the model's state read as its input there.
    """

    def inputs(self) -> list:
        return []

    def bind(self, inputs: list) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def apply(self, trainable: list, optimizer_values: list, inputs: list) -> list:
        raise NotImplementedError


_HOOKS = "_keras_dropneuron_step_hooks"


def add_step_hook(model: keras.Model, hook: StepHook) -> None:
    """Adds `hook` to `model`'s JAX train function (rebuilt now, synced first)."""
    hooks = vars(model).setdefault(_HOOKS, [])
    hooks.append(hook)
    _rebuild(model)


def remove_step_hook(model: keras.Model, hook: StepHook) -> None:
    """Removes `hook`; the train function is rebuilt (Keras's own without hooks)."""
    hooks = vars(model).get(_HOOKS, [])
    if hook in hooks:
        hooks.remove(hook)
    if not hooks:
        vars(model).pop(_HOOKS, None)
    _rebuild(model)


def _rebuild(model):
    sync(model)
    type(model).make_train_function(model, force=True)  # Keras's own, not through hooks
    hooks = list(vars(model).get(_HOOKS, []))
    if hooks:
        model.train_function = _hooked_train_function(model, hooks)


def _hooked_train_function(model, hooks):
    """Keras's JAX train function with `hooks` applied after each optimizer step."""
    import jax

    base_step = model.train_step

    def step(state, data, inputs):
        with contextlib.ExitStack() as bound:
            for hook, hook_inputs in zip(hooks, inputs, strict=True):
                bound.enter_context(hook.bind(hook_inputs))
            logs, (trainable, non_trainable, optimizer_values, metrics) = base_step(state, data)
        trainable = list(trainable)
        for hook, hook_inputs in zip(hooks, inputs, strict=True):
            trainable = hook.apply(trainable, optimizer_values, hook_inputs)
        return logs, (trainable, non_trainable, optimizer_values, metrics)

    if not model.run_eagerly and model.jit_compile:
        out_shardings = None
        if keras.distribution.distribution() is not None:
            out_shardings = (None, keras_internals.state_sharding_spec(model))
        step = jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

    def step_with_inputs(state, data):
        return step(state, data, [hook.inputs() for hook in hooks])

    return keras_internals.make_train_function(model, step_with_inputs)
