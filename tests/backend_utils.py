"""Backend-neutral helpers for the tests: the suite runs on the backend `KERAS_BACKEND` names."""

import contextlib

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def tensorflow_only(reason):
    """Marks a test (or, as `pytestmark`, a module) that needs the TensorFlow backend."""
    return pytest.mark.tensorflow_only(reason=reason)


def to_numpy(x):
    """A backend tensor, or a structure of them, as numpy (torch tensors with grads too)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def sync(model):
    """Writes the JAX trainer's in-flight weights back into the variables (else a no-op).

    During a JAX `fit` the weights live outside the variables: a callback that
    reads them after a batch calls this first, as Keras's own callbacks do.
    """
    state_sync = getattr(model, "jax_state_sync", None)
    if state_sync is not None:
        state_sync()


def value_and_grad(fn, x):
    """`fn(x)` and its gradient with respect to the numpy array `x`, both as numpy.

    Uses the backend's own autodiff, as training does: `tf.GradientTape`,
    `jax.value_and_grad` or `torch.autograd`. float64 on JAX needs its x64
    mode, which is switched on for the call.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(variable)
        return to_numpy(value), to_numpy(tape.gradient(value, variable))
    if BACKEND == "jax":
        import jax

        with float64_mode() if x.dtype == np.float64 else contextlib.nullcontext():
            value, grad = jax.value_and_grad(fn)(jax.numpy.asarray(x))
            return to_numpy(value), to_numpy(grad)
    if BACKEND == "torch":
        import torch

        tensor = torch.tensor(x, requires_grad=True)
        value = fn(tensor)
        (grad,) = torch.autograd.grad(value, tensor)
        return to_numpy(value), to_numpy(grad)
    raise NotImplementedError(f"no gradient helper for the {BACKEND!r} backend")


def float64_mode():
    """A context in which float64 is float64: JAX's x64 mode on JAX, nothing elsewhere."""
    if BACKEND == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()
