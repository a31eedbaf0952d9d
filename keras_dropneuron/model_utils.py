"""Checks and traversals shared by every stage of the workflow."""

from collections.abc import Iterator

import keras
import numpy as np

from keras_dropneuron import checks, layer_rules
from keras_dropneuron.layer_rules.base import attribute
from keras_dropneuron.regularizers import DROPNEURON_REGULARIZERS


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Yields every layer of `model` once, descending into nested models.

    A layer that sits both in `model` and in a nested model (or in a nested
    model used twice) is yielded at its first place only, so that its weights
    are counted, pruned and masked once. A wrapper (`Bidirectional`) is
    yielded itself, not the layers it wraps: its rule's `layer_weights` name
    their weights (`"forward_layer.cell.kernel"`).
    """
    seen = set()

    def walk(parent):
        for layer in parent.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    yield from walk(model)


def select_layers(
    model: keras.Model,
    layers: list[str | keras.layers.Layer] | None = None,
    prefer_regularized: bool = False,
    name: str = "layers",
) -> list[keras.layers.Layer]:
    """Returns the supported layers of `model` to work on.

    Args:
        model: A checked model.
        layers: `None`, or a list of layer names or layer objects of `model`.
        prefer_regularized: With `layers=None`, pick the layers that carry a
            DropNeuron regularizer, or every supported layer when none do.
        name: Argument name for error messages.

    Returns:
        The selected layers, each once (in the order given, or the order of
        `iter_layers`).

    Raises:
        TypeError: If `layers` is not `None` or a list of names or layers.
        ValueError: If `layers` is an empty list, or names a layer that
            `model` does not have or that is not supported.
    """
    supported = [layer for layer in iter_layers(model) if layer_rules.is_supported(layer)]
    if layers is None:
        if prefer_regularized:
            regularized = [layer for layer in supported if has_dropneuron_regularizer(layer)]
            if regularized:
                return regularized
        return supported
    layers = checks.check_layers(name, layers)
    if not layers:
        raise checks.invalid_value(
            name, "None or a non-empty list of layer names or layers", layers
        )
    by_name = {layer.name: layer for layer in iter_layers(model)}
    selected = []
    for item in layers:
        layer = by_name.get(item) if isinstance(item, str) else item
        if layer is None or not any(layer is known for known in by_name.values()):
            raise ValueError(
                f"Invalid value for argument `{name}`: {item!r} is not a layer of "
                f"model {model.name!r}. Known layers: {sorted(by_name)}"
            )
        if not layer_rules.is_supported(layer):
            raise ValueError(
                f"Unsupported layer in argument `{name}`: {layer.name!r} of type "
                f"{type(layer).__name__}. Supported layer types: "
                f"{', '.join(layer_rules.supported_layer_names())}"
            )
        if not any(layer is chosen for chosen in selected):
            selected.append(layer)
    return selected


def check_has_supported_layers(
    model: keras.Model, layers: list[keras.layers.Layer], name: str = "model"
) -> None:
    """Raises a clear error when `layers` (selected from `model`) is empty."""
    if not layers:
        raise ValueError(
            f"Invalid value for argument `{name}`: model {model.name!r} has no layer "
            "that DropNeuron can regularize or prune. Supported layer types: "
            f"{', '.join(layer_rules.supported_layer_names())}"
        )


def check_finite_weights(layers: list[keras.layers.Layer], action: str) -> None:
    """Raises a clear error when a supported weight of `layers` holds NaN or inf.

    Args:
        layers: Supported layers.
        action: What was refused, for the message (e.g. "prune").
    """
    for layer in layers:
        for layout in layer_rules.weight_layouts(layer):
            value = np.asarray(attribute(layer, layout.attribute).numpy())
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"Cannot {action} layer {layer.name!r}: its weight "
                    f"{layout.attribute!r} holds NaN or infinite values. Nothing was "
                    "modified."
                )


def has_dropneuron_regularizer(layer: keras.layers.Layer) -> bool:
    """Whether any weight of `layer` that its rule prunes carries one of our regularizers."""
    for layout in layer_rules.weight_layouts(layer):
        # The variable's own (a recurrent cell's, an attention projection's), else the layer's.
        variable = attribute(layer, layout.attribute)
        regularizer = getattr(variable, "regularizer", None) or getattr(
            layer, layout.regularizer_argument, None
        )
        if isinstance(regularizer, DROPNEURON_REGULARIZERS):
            return True
    return False
