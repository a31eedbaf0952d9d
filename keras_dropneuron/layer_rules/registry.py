"""The registry of layer rules: the rule of a layer, and `register_rule` to add one.

Lookup follows the layer's class hierarchy, most specific registered class
first, so a user subclass of `Dense` gets the Dense rule (the surgeon still
keeps it whole when it adds weights or its own `call()`), and a rule
registered for a user's class wins over the rule of any class it derives
from.
"""

import keras

from keras_dropneuron import checks
from keras_dropneuron.layer_rules.attention import MultiHeadAttentionRule
from keras_dropneuron.layer_rules.base import Barrier, LayerRule, attribute
from keras_dropneuron.layer_rules.bidirectional import BidirectionalRule
from keras_dropneuron.layer_rules.binary_ops import BinaryOpRule
from keras_dropneuron.layer_rules.conv import ConvRule, ConvTransposeRule
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.depthwise import DepthwiseRule, SeparableRule
from keras_dropneuron.layer_rules.einsum_dense import EinsumDenseRule
from keras_dropneuron.layer_rules.elementwise_ops import ElementwiseOpRule
from keras_dropneuron.layer_rules.embedding import EmbeddingRule
from keras_dropneuron.layer_rules.flatten import FlattenRule
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.merge import ConcatenateRule, MergeRule
from keras_dropneuron.layer_rules.per_channel import (
    ActivationRule,
    BatchNormalizationRule,
    PassThroughRule,
    PReLURule,
    ReshapeRule,
    ZeroPaddingRule,
)
from keras_dropneuron.layer_rules.recurrent import RecurrentRule
from keras_dropneuron.layer_rules.split import SplitRule

# The built-in rules, registered for their `types`.
RULES: tuple[LayerRule, ...] = (
    DenseRule(),
    EinsumDenseRule(),
    ConvRule(),
    ConvTransposeRule(),
    DepthwiseRule(),
    SeparableRule(),
    EmbeddingRule(),
    BatchNormalizationRule(),
    PReLURule(),
    ActivationRule(),
    ElementwiseOpRule(),
    BinaryOpRule(),
    ZeroPaddingRule(),
    ReshapeRule(),
    PassThroughRule(),
    MergeRule(),
    ConcatenateRule(),
    SplitRule(),
    FlattenRule(),
    MultiHeadAttentionRule(),
    RecurrentRule(),
    BidirectionalRule(),
)

# The rule of a layer without one: all its channels stay.
BARRIER = Barrier()

_BY_TYPE: dict[type, LayerRule] = {cls: rule for rule in RULES for cls in rule.types}
_BUILT_IN_IDS = {id(rule) for rule in RULES}

# Classes a rule would reach far beyond one layer family.
_TOO_GENERAL = (keras.layers.Layer, keras.Model, keras.Sequential)


_HUB_LOADED = False
_HUB_IDS: set[int] = set()  # listed in docs/transformers.md, not in the built-in table


def load_keras_hub_rules() -> None:
    """Registers the rules for keras-hub's blocks, and the classes slim models hold.

    keras-hub is optional, so the library does not import it: this runs the
    first time a rule is looked up for a keras-hub layer, and when
    keras-dropneuron is imported after keras-hub. A `.keras` file of a slim
    model holding a `HeadSizedTransformerEncoder` needs it before
    `keras.saving.load_model` when keras-dropneuron was imported first.
    Calling it again does nothing; without keras-hub it does nothing.
    """
    global _HUB_LOADED
    if _HUB_LOADED:
        return
    _HUB_LOADED = True
    try:
        from keras_dropneuron.layer_rules import keras_hub_blocks
    except ImportError:  # a keras-hub without these classes: its blocks stay barriers
        return
    for rule in keras_hub_blocks.RULES:
        _BUILT_IN_IDS.add(id(rule))
        _HUB_IDS.add(id(rule))
        for cls in rule.types:
            _BY_TYPE.setdefault(cls, rule)


def _registered_class(layer: keras.layers.Layer) -> type | None:
    """The most specific class of `layer` that has a rule, or `None`."""
    if not _HUB_LOADED and type(layer).__module__.startswith("keras_hub."):
        load_keras_hub_rules()
    return next((cls for cls in type(layer).__mro__ if cls in _BY_TYPE), None)


def rule_for(layer: keras.layers.Layer) -> LayerRule:
    """The rule of `layer`'s most specific registered class, else `BARRIER`.

    Example:

    >>> isinstance(rule_for(keras.layers.Dense(4)), DenseRule)
    True
    """
    cls = _registered_class(layer)
    if cls is None:
        return BARRIER
    rule = _BY_TYPE[cls]
    if id(rule) not in _BUILT_IN_IDS:
        _check_holds_weights(layer, rule)
    return rule


def is_user_rule(rule: LayerRule) -> bool:
    """Whether `rule` was registered with `register_rule` (not a built-in rule)."""
    return rule is not BARRIER and id(rule) not in _BUILT_IN_IDS


def _check_holds_weights(layer: keras.layers.Layer, rule: LayerRule) -> None:
    """Refuses a registered rule whose weights a built layer does not hold."""
    if not getattr(layer, "built", False):
        return
    for layout in rule.layer_weights(layer):
        if not isinstance(attribute(layer, layout.attribute), keras.Variable):
            raise ValueError(
                f"Invalid rule for layer {layer.name!r} of type {type(layer).__name__}: "
                f"expected the weight `{layout.attribute}` that {type(rule).__name__} "
                f"declares in `weights`. Received: a layer without a variable there. Fix "
                "the rule's `weights` or register it for another class with `register_rule`."
            )


def register_rule(
    layer_class: type[keras.layers.Layer],
    rule: LayerRule | type[LayerRule],
    *,
    replace: bool = False,
) -> LayerRule:
    """Registers `rule` for `layer_class` and its subclasses.

    From then on `regularize_model`, `prune_weights`, `PruneCallback`,
    `sparsity_report`, `slim_model` and the budget treat layers of
    `layer_class` as the rule says. The most specific registered class of a
    layer wins, so a rule for a subclass of `Dense` overrides the Dense rule
    for that subclass. The surgeon trusts the `call()` of `layer_class`
    itself; a subclass that overrides it is kept whole.

    Args:
        layer_class: A subclass of `keras.layers.Layer`.
        rule: A `LayerRule` instance, or a subclass of `LayerRule` (then
            created without arguments).
        replace: Whether to replace a rule `layer_class` already has.
            Defaults to `False`.

    Returns:
        The registered rule instance.

    Raises:
        TypeError: If `layer_class` is not a subclass of `keras.layers.Layer`,
            `rule` not a `LayerRule` instance or subclass, or `replace` not a
            bool.
        ValueError: If `layer_class` already has a rule and `replace` is
            `False`.

    Example:

    >>> class AffineRule(DenseRule):
    ...     types = (Affine,)
    >>> register_rule(Affine, AffineRule)
    """
    replace = checks.check_bool("replace", replace)
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise checks.invalid_type("layer_class", "a subclass of keras.layers.Layer", layer_class)
    if layer_class in _TOO_GENERAL:
        raise ValueError(
            "Invalid value for argument `layer_class`: expected one layer family, a subclass "
            "of keras.layers.Layer (a rule for the base class would apply to every layer "
            f"without a rule). Received: layer_class={layer_class.__name__}"
        )
    if isinstance(rule, type) and issubclass(rule, LayerRule):
        try:
            rule = rule()
        except TypeError as error:
            raise TypeError(
                "Invalid value for argument `rule`: expected a LayerRule subclass that takes "
                f"no arguments, or an instance. Received: rule={rule.__name__} ({error})"
            ) from error
    if not isinstance(rule, LayerRule):
        raise checks.invalid_type("rule", "a LayerRule instance or subclass", rule)
    existing = _BY_TYPE.get(layer_class)
    if existing is not None and not replace:
        raise ValueError(
            "Invalid value for argument `layer_class`: expected a layer class without a "
            f"rule (or replace=True). Received: layer_class={layer_class.__name__}, which "
            f"has the rule {type(existing).__name__}"
        )
    _BY_TYPE[layer_class] = rule
    return rule


def registered() -> dict[type, LayerRule]:
    """Every registered layer class and its rule, built-ins first (keras-hub's not listed)."""
    return {cls: rule for cls, rule in _BY_TYPE.items() if id(rule) not in _HUB_IDS}


def runs_registered_call(layer: keras.layers.Layer) -> bool:
    """Whether `layer` runs the `call()` of the class its rule is registered for.

    A subclass that overrides `call()` computes something its rule does not
    describe, unless the subclass was registered itself.
    """
    cls = _registered_class(layer)
    return cls is not None and type(layer).call is cls.call


def weight_layouts(layer: keras.layers.Layer) -> tuple[WeightLayout, ...]:
    """The `WeightLayout`s of `layer`, or `()` when it is not supported.

    The most specific registered class wins, so user subclasses of `Dense` and
    friends are handled like their parent.
    """
    return rule_for(layer).layer_weights(layer)


def is_supported(layer: keras.layers.Layer) -> bool:
    """Whether DropNeuron knows the weight layout of `layer`."""
    return bool(weight_layouts(layer))


def supported_layer_names() -> list[str]:
    """Names of the registered classes with weights to prune, for messages and docs."""
    return sorted(
        cls.__name__ for cls, rule in registered().items() if rule.weights_of(cls) or rule.wraps
    )
