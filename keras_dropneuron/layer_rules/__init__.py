"""One registry of layer rules: what keras-dropneuron knows about each layer.

The regularizers, `regularize_model`, pruning, the callbacks, the reports and
the surgeon all ask `rule_for(layer)`. Adding a layer family is one rule class
(see `base.LayerRule`) in its own module, listed in `RULES` below, and its
tests. Lookup follows the layer's class hierarchy, most specific class first,
so a user subclass of `Dense` gets the Dense rule (the surgeon still keeps it
whole when it adds weights or its own `call()`).
"""

from keras_dropneuron.layer_rules.attention import MultiHeadAttentionRule
from keras_dropneuron.layer_rules.base import Barrier, Cut, LayerRule, WeightLayout
from keras_dropneuron.layer_rules.bidirectional import BidirectionalRule
from keras_dropneuron.layer_rules.conv import ConvRule, ConvTransposeRule
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.depthwise import DepthwiseRule, SeparableRule
from keras_dropneuron.layer_rules.embedding import EmbeddingRule
from keras_dropneuron.layer_rules.flatten import FlattenRule
from keras_dropneuron.layer_rules.merge import ConcatenateRule, MergeRule
from keras_dropneuron.layer_rules.per_channel import (
    ActivationRule,
    BatchNormalizationRule,
    PassThroughRule,
    PReLURule,
    ZeroPaddingRule,
)
from keras_dropneuron.layer_rules.recurrent import RecurrentRule

RULES: tuple[LayerRule, ...] = (
    DenseRule(),
    ConvRule(),
    ConvTransposeRule(),
    DepthwiseRule(),
    SeparableRule(),
    EmbeddingRule(),
    BatchNormalizationRule(),
    PReLURule(),
    ActivationRule(),
    ZeroPaddingRule(),
    PassThroughRule(),
    MergeRule(),
    ConcatenateRule(),
    FlattenRule(),
    MultiHeadAttentionRule(),
    RecurrentRule(),
    BidirectionalRule(),
)

_BY_TYPE = {cls: rule for rule in RULES for cls in rule.types}
BARRIER = Barrier()


def rule_for(layer):
    """The rule of `layer`'s most specific registered class, else `BARRIER`."""
    for cls in type(layer).__mro__:
        rule = _BY_TYPE.get(cls)
        if rule is not None:
            return rule
    return BARRIER


__all__ = ["BARRIER", "RULES", "Barrier", "Cut", "LayerRule", "WeightLayout", "rule_for"]
