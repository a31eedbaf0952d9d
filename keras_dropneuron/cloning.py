"""Copies of the user's model that do not go through what configs cannot carry.

`keras.models.clone_model` re-creates each layer from its config and
compiles the clone from the model's compile config. Two things in a model
the user built in Python do not survive that: a `Lambda` layer's Python
function (safe mode refuses to deserialize its bytecode) and an
unregistered custom loss or lambda metric in the compile config. The user's
live objects are at hand, so the copies use them instead.
"""

import contextlib
from collections.abc import Callable, Iterator

import keras

from keras_dropneuron import keras_internals


@contextlib.contextmanager
def uncompiled(model: keras.Model) -> Iterator[keras.Model]:
    """Marks `model` uncompiled for the block, so that its clones skip its compile config.

    Args:
        model: The model to clone.

    Returns:
        A context manager that yields `model` and restores its compiled state.

    Example:

    >>> with uncompiled(model):
    ...     clone = keras.models.clone_model(model)
    """
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        yield model
    finally:
        model.compiled = compiled


def copy_lambda(layer: keras.layers.Lambda) -> keras.layers.Lambda:
    """A new `Lambda` layer calling the same Python function as `layer`."""
    return keras.layers.Lambda(
        layer.function,
        output_shape=keras_internals.lambda_output_shape(layer),
        mask=layer.mask,
        arguments=layer.arguments,
        name=layer.name,
        dtype=layer.dtype_policy,
        trainable=layer.trainable,
    )


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config(layer.get_config())  # what clone_model does


def clone_model(
    model: keras.Model,
    clone_function: Callable[[keras.layers.Layer], keras.layers.Layer] | None = None,
) -> keras.Model:
    """An uncompiled copy of `model` with new layers (weights not copied).

    Nested models are cloned layer by layer. `Lambda` layers are re-created
    around the same function; every other layer through `clone_function`
    (default: from its config). A keras-hub model without `clone_function`
    is re-created by its own class (its weights are then copied too).

    Args:
        model: A Sequential or Functional model; not modified.
        clone_function: Makes the new layer from an old one. Defaults to
            `None`: `from_config(get_config())`.

    Returns:
        The new model.
    """
    if clone_function is None:
        from keras_dropneuron.surgery import hub_models  # the surgeon imports this module

        if hub_models.is_hub_model(model):
            # Its class re-creates its layers; keras's clone would give a plain Functional.
            return hub_models.copy_model(model)
    clone_function = clone_function or _clone_layer

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.Lambda):
            return copy_lambda(layer)
        return clone_function(layer)

    with uncompiled(model):
        return keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
