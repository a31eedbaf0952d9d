"""Re-creates a layer and copies its whole state, the way `.keras` files do.

A layer the surgeon does not resize must come back exactly as it was: every
trainable and non-trainable variable, quantization scales, assets such as
lookup vocabularies, and whatever a load hook (`load_own_variables` calling
`finalize_state`, for example) derives from them. So the state travels
through the same per-layer hooks that `model.save()` and `load_model()` use,
not through `get_weights()`/`set_weights()`.
"""

import tempfile
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from keras_dropneuron import keras_internals
from keras_dropneuron.weight_values import numpy

# Constructor arguments that hold callables. They are passed on as the live
# objects, so unregistered functions, lambdas and regularizers without
# `get_config` survive (the source model holds the same objects).
_LIVE_SUFFIXES = ("_regularizer", "_constraint")
_NEUTRAL_SUFFIXES = ("_regularizer", "_constraint", "_initializer")


class LayerCopyError(ValueError):
    """A layer cannot be re-created from its config or given its state."""


def _is_live_argument(argument):
    return argument == "activation" or argument.endswith(_LIVE_SUFFIXES)


def _config_without_callables(layer):
    """`get_config()` of a shallow stand-in whose callables are neutral.

    Used when the real `get_config()` fails on an unserializable callable; the
    user's layer itself is never touched.
    """
    stand_in = object.__new__(type(layer))
    stand_in.__dict__.update(layer.__dict__)
    for argument, value in layer.__dict__.items():
        if value is None or argument.startswith("_"):
            continue
        if argument == "activation":
            stand_in.__dict__[argument] = keras.activations.linear
        elif argument.endswith(_NEUTRAL_SUFFIXES):
            stand_in.__dict__[argument] = None
    config = type(layer).get_config(stand_in)
    for argument in config:
        if argument.endswith("_initializer") and hasattr(layer, argument):
            config[argument] = getattr(layer, argument)
    return config


def _is_weight_regularizer(argument):
    return argument.endswith("_regularizer") and argument != "activity_regularizer"


def _without_weight_regularizers(value):
    """A serialized object (a wrapped layer's config) without weight regularizers.

    Wrappers such as `Bidirectional` hold their layers as serialized configs;
    the copy is new, nested dicts included, so the source is not touched.
    """
    if isinstance(value, list):
        return [_without_weight_regularizers(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k: None if _is_weight_regularizer(k) else _without_weight_regularizers(v)
        for k, v in value.items()
    }


def layer_config(
    layer: keras.layers.Layer,
    name: str,
    keep_regularizers: bool,
    get_config: Callable[[keras.layers.Layer], dict] | None = None,
) -> dict:
    """The config to re-create `layer` under `name`, with live callables.

    Args:
        layer: The source layer.
        name: Name of the new layer.
        keep_regularizers: Whether weight regularizers are kept (activity
            regularizers always are).
        get_config: Reads the layer's config (its rule's `layer_config`).
            Defaults to `None`: `layer.get_config()`.

    Returns:
        A config dict for `type(layer).from_config`.

    Raises:
        LayerCopyError: If the layer's config cannot be read.
    """
    try:
        config = get_config(layer) if get_config else layer.get_config()
    except Exception:
        try:
            config = _config_without_callables(layer)
        except Exception as error:
            raise LayerCopyError(
                f"Cannot copy layer {layer.name!r} of type {type(layer).__name__}: "
                "its `get_config()` failed, so it cannot be re-created. Implement "
                "`get_config()` for this layer class (see the Keras guide on "
                "serialization). Received error: "
                f"{type(error).__name__}: {error}"
            ) from error
    config["name"] = name
    for argument in list(config):
        # Also where the layer keeps it privately (MultiHeadAttention's, passed to its
        # projections): the serialized config would bring it back.
        if _is_weight_regularizer(argument) and not keep_regularizers:
            config[argument] = None
            continue
        if not _is_live_argument(argument) or not hasattr(layer, argument):
            continue
        config[argument] = getattr(layer, argument)
    if not keep_regularizers:
        for argument, value in config.items():
            if isinstance(value, dict | list):  # serialized wrapped layers
                config[argument] = _without_weight_regularizers(value)
    return config


def _is_initializer(argument, value):
    return argument.endswith("_initializer") and value is not None


def new_layer(
    layer: keras.layers.Layer,
    config: dict,
    placeholder_initializers: bool = False,
    cls: type | None = None,
) -> keras.layers.Layer:
    """`type(layer).from_config(config)` (or `cls`'s), with a clear error on failure.

    With `placeholder_initializers`, the weights are created as zeros: every
    one of them is overwritten once the layer is built, and drawing random
    values for millions of parameters costs more than the rest of the copy.
    `restore_initializers` then puts the layer's own initializers back, so
    its config is the source layer's.
    """
    if placeholder_initializers:
        config = {k: "zeros" if _is_initializer(k, v) else v for k, v in config.items()}
    try:
        return (cls or type(layer)).from_config(config)
    except Exception as error:
        raise LayerCopyError(
            f"Cannot copy layer {layer.name!r} of type {type(layer).__name__}: "
            "`from_config(get_config())` failed, so it cannot be re-created. "
            f"Received error: {type(error).__name__}: {error}"
        ) from error


def restore_initializers(new: keras.layers.Layer, config: dict) -> None:
    """Sets the initializers `config` names on the built layer `new`.

    Where the layer only forwards the attribute (an RNN's initializers live in
    its cell), it is set on the sublayer that holds it.
    """
    for argument, value in config.items():
        if not _is_initializer(argument, value):
            continue
        initializer = keras.initializers.get(value)
        for holder in keras_internals.sublayers(new, include_self=True):
            try:
                if argument in vars(holder):
                    setattr(holder, argument, initializer)
            except AttributeError:
                continue


def _sublayers(layer):
    return keras_internals.sublayers(layer, recursive=False)


def _value(value):
    if isinstance(value, keras.Variable):
        return numpy(value)  # read once per slim_model call
    return np.array(ops.convert_to_numpy(value))


def _keras_own(layer):
    """Whether `layer` and every layer inside it are Keras's own classes."""
    return all(
        type(sublayer).__module__.startswith("keras.")
        for sublayer in keras_internals.sublayers(layer, include_self=True)
    )


def _copy_through_hooks(source, target):
    """Copies state with the per-layer hooks `model.save()`/`load_model()` use."""
    store = {}
    source.save_own_variables(store)
    target.load_own_variables({key: _value(value) for key, value in store.items()})
    if hasattr(source, "save_assets") and hasattr(target, "load_assets"):
        with tempfile.TemporaryDirectory() as directory:
            source.save_assets(directory)
            target.load_assets(directory)
    children = _sublayers(source), _sublayers(target)
    if len(children[0]) != len(children[1]):
        raise ValueError(
            f"{len(children[0])} sublayers in the source, {len(children[1])} in the copy"
        )
    for old, new in zip(*children, strict=True):
        _copy_through_hooks(old, new)


def _relative_path(layer, weight):
    prefix = f"{layer.path or layer.name}/"
    return weight.path[len(prefix) :] if weight.path.startswith(prefix) else weight.path


def _paired_weights(source, target):
    """Pairs the weights of two layers built from one config, or returns `None`.

    By path where the paths agree; else by position, as weights created without
    a name get a fresh automatic one (`variable_3`) in the copy.
    """
    old, new = source.weights, target.weights
    if len(old) != len(new):
        return None
    by_path = {_relative_path(target, w): w for w in new}
    if len(by_path) == len(new) and all(_relative_path(source, w) in by_path for w in old):
        return [(w, by_path[_relative_path(source, w)]) for w in old]
    pairs = list(zip(old, new, strict=True))
    if all(a.shape == b.shape and a.dtype == b.dtype for a, b in pairs):
        return pairs
    return None


def _finalize(layer):
    for sublayer in keras_internals.sublayers(layer, include_self=True):
        if hasattr(sublayer, "finalize_state"):
            sublayer.finalize_state()


def copy_state(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copies every variable and asset of `source` into `target`.

    `target` must be built from the same config. The state goes through the
    hooks `model.save()` uses, sublayers included; a weight those hooks leave
    out (a subclass's extra variable) is then copied by its path (by position
    for weights created without a name), and the load hook `finalize_state()`
    runs again. Only layers of Keras's own classes skip that check.

    Raises:
        LayerCopyError: If the two layers do not hold the same weights.
    """
    try:
        _copy_through_hooks(source, target)
        hooks_failed = None
    except Exception as error:
        hooks_failed = error
    if hooks_failed is None and _keras_own(source):
        return  # Keras's own hooks save and load every weight: .keras files rely on it
    pairs = _paired_weights(source, target)
    if pairs is None:
        reason = f" Received error: {hooks_failed}" if hooks_failed else ""
        raise LayerCopyError(
            f"Cannot copy the state of layer {source.name!r} of type "
            f"{type(source).__name__}: the re-created layer holds the weights "
            f"{[w.path for w in target.weights]}, the source "
            f"{[w.path for w in source.weights]}.{reason}"
        )
    stale = False
    for weight, copy in pairs:
        value = numpy(weight)
        if not np.array_equal(np.asarray(ops.convert_to_numpy(copy)), value):
            copy.assign(value)
            stale = True
    if stale or hooks_failed:
        _finalize(target)
