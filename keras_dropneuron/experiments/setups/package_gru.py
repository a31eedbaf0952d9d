"""A stacked bidirectional GRU that tells which standard-library package a snippet comes from.

The snippets (`experiments.stdlib_packages`) are up to 32 tokens, padded
with 0 and read through a mask: each direction of each GRU sees only a
snippet's own tokens.
"""

import keras

from keras_dropneuron.experiments import stdlib_packages

L = keras.layers
EMBEDDING, UNITS = 32, 48


def build_package_gru() -> keras.Model:
    """Embedding (masking the padding), two `Bidirectional(GRU(48))`, then a softmax.

    Returns:
        The uncompiled functional model.
    """
    snippets = keras.Input((stdlib_packages.SNIPPET_TOKENS,), dtype="int32", name="snippet")
    x = L.Embedding(stdlib_packages.VOCABULARY, EMBEDDING, mask_zero=True, name="tokens")(snippets)
    x = L.Bidirectional(L.GRU(UNITS, return_sequences=True), name="gru1")(x)
    x = L.Bidirectional(L.GRU(UNITS), name="gru2")(x)
    outputs = L.Dense(len(stdlib_packages.PACKAGES), "softmax", name="package")(x)
    return keras.Model(snippets, outputs, name="package_gru")
