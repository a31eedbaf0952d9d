"""One registry of layer rules: what keras-dropneuron knows about each layer.

The regularizers, `regularize_model`, pruning, the callbacks, the reports, the
budget and the surgeon all ask `rule_for(layer)`. A layer family is one rule
class (see `LayerRule`) in its own module, listed in `registry.RULES`, with
its tests; a layer class of your own gets one with `register_rule` (see
`docs/custom_layers.md`). `supported_layers_table()` prints what the registry
knows.
"""

from keras_dropneuron.layer_rules.attention import MultiHeadAttentionRule
from keras_dropneuron.layer_rules.base import Barrier, Cut, LayerRule, Strengths
from keras_dropneuron.layer_rules.bidirectional import BidirectionalRule
from keras_dropneuron.layer_rules.conv import ConvRule, ConvTransposeRule
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.depthwise import DepthwiseRule, SeparableRule
from keras_dropneuron.layer_rules.einsum_dense import EinsumDenseRule
from keras_dropneuron.layer_rules.embedding import EmbeddingRule
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.layer_rules.per_channel import PerChannelRule
from keras_dropneuron.layer_rules.recurrent import RecurrentRule
from keras_dropneuron.layer_rules.registry import (
    BARRIER,
    RULES,
    is_supported,
    is_user_rule,
    load_keras_hub_rules,
    register_rule,
    rule_for,
    runs_registered_call,
    supported_layer_names,
    weight_layouts,
)
from keras_dropneuron.layer_rules.resized import ResizedRule
from keras_dropneuron.layer_rules.table import supported_layers_table
from keras_dropneuron.layer_rules.transformer_block import (
    FeedForward,
    GroupedAttention,
    TransformerBlockRule,
)

__all__ = [
    "BARRIER",
    "RULES",
    "Barrier",
    "BidirectionalRule",
    "ConvRule",
    "ConvTransposeRule",
    "Cut",
    "DenseRule",
    "DepthwiseRule",
    "EinsumDenseRule",
    "EmbeddingRule",
    "FeedForward",
    "GroupedAttention",
    "LayerRule",
    "MultiHeadAttentionRule",
    "PerChannelRule",
    "RecurrentRule",
    "ResizedRule",
    "SeparableRule",
    "Strengths",
    "TransformerBlockRule",
    "WeightLayout",
    "is_supported",
    "is_user_rule",
    "load_keras_hub_rules",
    "register_rule",
    "rule_for",
    "runs_registered_call",
    "supported_layer_names",
    "supported_layers_table",
    "weight_layouts",
]
