"""Embedding: dimensions are removed; its input is ids, not channels."""

from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import (
    Constants,
    Fold,
    Indices,
    Layer,
    LayerRule,
    Tensors,
    Weights,
)
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis


class EmbeddingRule(LayerRule):
    """`embeddings (vocab, dim)`: dimension `j` is column `j`, id `i` row `i`."""

    types = (layers.Embedding,)
    weights = (WeightLayout("embeddings", "embeddings_regularizer", (-2,), (-1,)),)
    state = ("embeddings",)
    width_argument = "output_dim"

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        return None

    def input_id_limit(self, layer: Layer) -> int | None:
        return layer.input_dim

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.keep(call.inputs[0])
        analysis.read(call.inputs[0])
        table = numpy(call.layer.embeddings)
        # Like a kernel: a dimension within the threshold everywhere counts as zero.
        small = np.all(np.abs(table) <= analysis.threshold, axis=0)
        constant = np.all(table == table[:1], axis=0)
        return np.where(small, 0.0, np.where(constant, table[0], np.nan))

    def slice(self, layer: Layer, kept_in: Indices, kept_out: Indices, fold: Fold) -> Weights:
        return {"embeddings": numpy(layer.embeddings)[:, kept_out]}
