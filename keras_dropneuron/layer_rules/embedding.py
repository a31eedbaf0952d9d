"""Embedding: dimensions are removed; its input is ids, not channels."""

import numpy as np
from keras import layers

from keras_dropneuron.layer_rules.base import LayerRule
from keras_dropneuron.layer_rules.layout import WeightLayout
from keras_dropneuron.weight_values import numpy


class EmbeddingRule(LayerRule):
    """`embeddings (vocab, dim)`: dimension `j` is column `j`, id `i` row `i`."""

    types = (layers.Embedding,)
    weights = (WeightLayout("embeddings", "embeddings_regularizer", (-2,), (-1,)),)
    state = ("embeddings",)
    width_argument = "output_dim"

    def barrier_reason(self, layer, in_tensors, out_tensors):
        return None

    def input_id_limit(self, layer):
        return layer.input_dim

    def analyze(self, analysis, index, call, constants):
        analysis.keep(call.inputs[0])
        analysis.read(call.inputs[0])
        table = numpy(call.layer.embeddings)
        # Like a kernel: a dimension within the threshold everywhere counts as zero.
        small = np.all(np.abs(table) <= analysis.threshold, axis=0)
        constant = np.all(table == table[:1], axis=0)
        return np.where(small, 0.0, np.where(constant, table[0], np.nan))

    def slice(self, layer, kept_in, kept_out, fold):
        return {"embeddings": numpy(layer.embeddings)[:, kept_out]}
