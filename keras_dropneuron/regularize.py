"""Attach correctly oriented DropNeuron regularizers to an existing model."""

import keras

from keras_dropneuron import (
    checks,
    cloning,
    compiling,
    layer_rules,
    model_utils,
    normalized_units,
)
from keras_dropneuron.layer_rules.base import Strengths, attribute
from keras_dropneuron.regularizers import DropNeuronRegularizer, NormalizedUnitRegularizer
from keras_dropneuron.surgery import hub_models


def _set_config(config: dict, path: str, value: object) -> None:
    """Sets `config[a][b]... = value` for the path `"a.b..."` (a wrapped layer's argument)."""
    *parents, name = path.split(".")
    for key in parents:
        config = config[key]
    config[name] = value


def _set_variable_regularizers(model, clone, selected, strengths, arguments=False):
    """Sets the regularizers rules put on variables (`LayerRule.variable_regularizers`).

    With `arguments`, also those the rules give as constructor arguments
    (`LayerRule.regularizers`), on the variables of the weights that take
    them. The clone holds its layers in the source's order.
    """
    chosen = {id(layer) for layer in selected}
    pairs = zip(model_utils.iter_layers(model), model_utils.iter_layers(clone), strict=True)
    for layer, copy in pairs:
        if id(layer) not in chosen:
            continue
        rule = layer_rules.rule_for(layer)
        regs = rule.variable_regularizers(layer, strengths)
        if arguments:
            for argument, reg in rule.regularizers(layer, strengths).items():
                for layout in rule.layer_weights(layer):
                    if layout.regularizer_argument == argument:
                        regs[layout.attribute] = reg
        for path, reg in regs.items():
            attribute(copy, path).regularizer = reg


def _join_normalized_units(model, clone, selected, strengths):
    """Puts a `NormalizedUnitRegularizer` on the kernels of units that a BatchNormalization reads.

    The unit's `li` group takes in the normalization's `gamma_j` and `beta_j`;
    the kernel's own penalty keeps its other terms (`lo`, `l1`, `l2`).
    """
    if not strengths.li:
        return
    copies = dict(
        zip(
            map(id, model_utils.iter_layers(model)),
            model_utils.iter_layers(clone),
            strict=True,
        )
    )
    chosen = {id(layer) for layer in selected}
    for key, units in normalized_units.find_normalized_units(model).items():
        copy, norm = copies.get(key), copies.get(id(units.norm))
        if key not in chosen or copy is None or norm is None:
            continue
        variable = attribute(copy, units.layout.attribute)
        own = variable.regularizer
        rest = None
        if isinstance(own, DropNeuronRegularizer) and (own.lo or own.l1 or own.l2):
            rest = DropNeuronRegularizer.from_config({**own.get_config(), "li": 0.0})
        variable.regularizer = NormalizedUnitRegularizer(
            strengths.li,
            normalized_units.normalization_weights(norm),
            li_axis=units.layout.output_axes[0],
            rest=rest,
            scale_by_group_size=strengths.scale_by_group_size,
        )


def regularize_model(
    model: keras.Model,
    li: float = 0.0,
    lo: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    scale_by_group_size: bool = False,
    layers: list[str | keras.layers.Layer] | None = None,
    heads: float | None = None,
    bn_scale: float = 0.0,
) -> keras.Model:
    """Returns a copy of `model` with DropNeuron regularizers on its weights.

    Every layer with a rule (see `keras_dropneuron.layer_rules`, and
    `supported_layers_table()` there) gets the regularizers its rule gives
    (`LayerRule.regularizers`): by default a `DropNeuronRegularizer` per
    weight, its groups oriented to the weight's unit axes and gate blocks
    (both kernels of a recurrent layer, inside a `Bidirectional` wrapper in
    the configs of both wrapped layers). A `MultiHeadAttention` gets a
    `HeadRegularizer` (strength `heads`, plus `l1` and `l2`) as its
    `kernel_regularizer`, which its four projections share: a head's penalty
    is the norms of its query, key, value and output slices. A Dense or
    Conv unit that a BatchNormalization reads (`normalized_units`) gets one
    incoming group spanning its kernel column and the normalization's
    `gamma_j` and `beta_j` (a `NormalizedUnitRegularizer` on the copy's
    kernel variable; its config keeps the plain regularizer). Existing
    regularizers on those weights are replaced; weights, biases and
    everything else are copied; `Lambda` layers call the same Python
    function. A model compiled with a loss gives a copy compiled with the
    same loss and metrics objects and a new optimizer of the same config.
    `model` is not modified.

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
        heads: Per-head strength for `MultiHeadAttention` layers. Defaults to
            `None`: `li` (a head is the attention layer's unit); `0.0` with
            `l1 = l2 = 0` leaves attention layers as they are.
        bn_scale: L1 strength on the `gamma` of every BatchNormalization
            of the model that has one, whatever `layers` says (network
            slimming; prune with `PruneCallback(mode="scale")`). Defaults to
            `0.0`.

    Returns:
        A new model of the same kind with the same weights.

    Raises:
        TypeError: If `model` is not a Keras model or a strength not a number.
        ValueError: For subclassed models, bad strengths, unknown layers,
            models without supported layers, weights that are not finite, or an
            attention layer whose kernels' head axes cannot be told apart
            (see `HeadRegularizer`).

    Example:

    >>> model = regularize_model(model, li=1e-4, lo=1e-4)
    """
    scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
    values = {
        name: checks.check_non_negative_float(name, value)
        for name, value in (("li", li), ("lo", lo), ("l1", l1), ("l2", l2))
    }
    heads = values["li"] if heads is None else checks.check_non_negative_float("heads", heads)
    bn_scale = checks.check_non_negative_float("bn_scale", bn_scale)
    strengths = Strengths(**values, heads=heads, scale_by_group_size=scale_by_group_size)
    checks.check_layers("layers", layers)
    checks.check_model("model", model)
    selected = model_utils.select_layers(model, layers)
    model_utils.check_has_supported_layers(model, selected)
    model_utils.check_finite_weights(selected, "regularize")
    regs = {
        id(layer): layer_rules.rule_for(layer).regularizers(layer, strengths) for layer in selected
    }

    if bn_scale:
        for layer in model_utils.iter_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
                regs[id(layer)] = {"gamma_regularizer": DropNeuronRegularizer(l1=bn_scale)}

    def clone_layer(layer):
        config = layer_rules.rule_for(layer).layer_config(layer)
        arguments = regs.get(id(layer), {})
        for argument, reg in arguments.items():
            _set_config(config, argument, keras.regularizers.serialize(reg))
        if not arguments:
            return layer.__class__.from_config(config)
        try:
            return layer.__class__.from_config(config)
        except TypeError as error:  # the class takes no such argument
            raise ValueError(
                f"Invalid layer {layer.name!r} of type {type(layer).__name__}: expected a "
                f"constructor that takes {', '.join(sorted(arguments))} (its rule puts the "
                f"penalties there). Received: {error}"
            ) from error

    if hub_models.is_hub_model(model):
        # Its class re-creates its layers from its own config: the copy keeps
        # the class, and every penalty goes on the copy's variables.
        clone = hub_models.copy_model(model)
        _set_variable_regularizers(model, clone, selected, strengths, arguments=True)
        for layer, copy in zip(
            model_utils.iter_layers(model), model_utils.iter_layers(clone), strict=True
        ):
            for argument, reg in regs.get(id(layer), {}).items():
                if argument == "gamma_regularizer":  # `bn_scale`: no rule names it
                    copy.gamma.regularizer = reg
        _join_normalized_units(model, clone, selected, strengths)
    else:
        clone = cloning.clone_model(model, clone_function=clone_layer)
        clone.set_weights(model.get_weights())
        _set_variable_regularizers(model, clone, selected, strengths)
        _join_normalized_units(model, clone, selected, strengths)
    if getattr(model, "compiled", False) and compiling.compiled_loss(model) is not None:
        compiling.compile_like(clone, model)
    return clone
