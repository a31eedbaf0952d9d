"""Attach correctly oriented DropNeuron regularizers to an existing model."""

import keras

from keras_dropneuron import checks, model_utils, supported_layers
from keras_dropneuron.regularizers import DropNeuronRegularizer


def regularizer_for(layout, li=0.0, lo=0.0, l1=0.0, l2=0.0, scale_by_group_size=False):
    """Returns a `DropNeuronRegularizer` whose axes follow `layout`."""
    return DropNeuronRegularizer(
        li=li,
        lo=lo,
        l1=l1,
        l2=l2,
        li_axis=layout.output_axes,
        lo_axis=layout.input_axes,
        scale_by_group_size=scale_by_group_size,
    )


def regularize_model(
    model, li=0.0, lo=0.0, l1=0.0, l2=0.0, scale_by_group_size=False, layers=None
):
    """Returns a copy of `model` with DropNeuron regularizers on its weights.

    Every supported layer (see `keras_dropneuron.supported_layers`) gets a
    `DropNeuronRegularizer` oriented to its kernel layout: Dense and Conv
    kernels `(*k, in, out)`, transposed convolutions `(*k, out, in)`, depthwise
    kernels (one incoming group per output channel) and both kernels of
    separable convolutions. Existing regularizers on those weights are replaced;
    weights, biases and everything else are copied. `model` is not modified.

    Args:
        model: A Sequential or Functional model, nested models included.
        li: Incoming-group strength. Defaults to `0.0`.
        lo: Outgoing-group strength. Defaults to `0.0`.
        l1: L1 strength. Defaults to `0.0`.
        l2: Squared L2 strength. Defaults to `0.0`.
        scale_by_group_size: Weight groups by `sqrt(group size)`.
            Defaults to `False`.
        layers: Names or layers to regularize. Defaults to `None`: every
            supported layer.

    Returns:
        A new model of the same kind with the same weights.

    Raises:
        TypeError: If `model` is not a Keras model or a strength not a number.
        ValueError: For subclassed models, bad strengths, unknown layers,
            models without supported layers or weights that are not finite.

    Example:

    >>> model = regularize_model(model, li=1e-4, lo=1e-4)
    """
    scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
    strengths = {
        name: checks.check_non_negative_float(name, value)
        for name, value in (("li", li), ("lo", lo), ("l1", l1), ("l2", l2))
    }
    checks.check_layers("layers", layers)
    checks.check_model("model", model)
    selected = model_utils.select_layers(model, layers)
    model_utils.check_has_supported_layers(model, selected)
    model_utils.check_finite_weights(selected, "regularize")
    chosen = {id(layer) for layer in selected}

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) in chosen:
            for layout in supported_layers.weight_layouts(layer):
                reg = regularizer_for(layout, scale_by_group_size=scale_by_group_size, **strengths)
                config[layout.regularizer_argument] = keras.regularizers.serialize(reg)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    return clone
