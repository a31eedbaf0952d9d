"""A small Vision Transformer on MNIST: 16 patches of 7x7 pixels, 4 pre-norm blocks."""

import keras
from keras import ops

from keras_dropneuron.experiments import data
from keras_dropneuron.experiments.setups.base import Setup, penalty
from keras_dropneuron.regularizers import HeadRegularizer

L = keras.layers

VIT_BLOCKS, VIT_HEADS, VIT_WIDTH, VIT_FEED_FORWARD = 4, 4, 64, 128


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class PositionEmbedding(L.Layer):
    """Adds a learned vector to each position: `outputs = inputs + positions`.

    Args:
        initializer: Initializer of the `(positions, width)` table. Defaults to
            `"random_normal"` (standard deviation 0.05).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> x = PositionEmbedding()(keras.Input((16, 64)))
    """

    def __init__(
        self, initializer: str | keras.initializers.Initializer = "random_normal", **kwargs
    ):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape: tuple) -> None:
        self.positions = self.add_weight(
            shape=tuple(input_shape[1:]), initializer=self.initializer, name="positions"
        )

    def call(self, inputs):
        return inputs + ops.cast(self.positions, inputs.dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


def _block(x, block: int, penalties: dict, penalized: bool):
    """One pre-norm residual block: attention, then the feed-forward units.

    The attention has a group lasso per head; the feed-forward units have Li
    on their incoming columns and Lo on their outgoing rows.
    """
    head_dim = VIT_WIDTH // VIT_HEADS
    h = L.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
    heads = HeadRegularizer(penalties["heads"], num_heads=VIT_HEADS, key_dim=head_dim)
    h = L.MultiHeadAttention(
        VIT_HEADS,
        head_dim,
        name=f"block{block}_attention",
        kernel_regularizer=heads if penalized else None,
    )(h, h)
    x = L.Add(name=f"block{block}_add1")([x, h])
    h = L.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
    h = L.Dense(
        VIT_FEED_FORWARD,
        "gelu",
        name=f"block{block}_ff1",
        kernel_regularizer=penalty({"li": penalties["ff_li"]}, penalized),
    )(h)
    h = L.Dense(
        VIT_WIDTH,
        name=f"block{block}_ff2",
        kernel_regularizer=penalty({"lo": penalties["ff_lo"]}, penalized),
    )(h)
    return L.Add(name=f"block{block}_add2")([x, h])


def build_mnist_vit(variant: str, penalties: dict) -> keras.Model:
    """The ViT: patches, embedding, `VIT_BLOCKS` blocks, mean pooling, softmax.

    Args:
        variant: `"dropneuron"` or `"unpenalized"` (no penalties).
        penalties: Strengths: `heads` (per attention head), `ff_li`, `ff_lo`.

    Returns:
        The uncompiled functional model.
    """
    penalized = variant != "unpenalized"
    images = keras.Input((28, 28), name="image")
    # 16 patches of 7 x 7 pixels: (4 x 7, 4 x 7) -> (4, 4, 7, 7) -> (16, 49).
    x = L.Reshape((4, 7, 4, 7), name="rows_cols")(images)
    x = L.Permute((1, 3, 2, 4), name="patch_grid")(x)
    x = L.Reshape((16, 49), name="patches")(x)
    x = L.Dense(VIT_WIDTH, name="embed")(x)
    x = PositionEmbedding(name="position")(x)
    for block in range(1, VIT_BLOCKS + 1):
        x = _block(x, block, penalties, penalized)
    x = L.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    outputs = L.Dense(10, "softmax", name="output")(x)
    return keras.Model(images, outputs, name="mnist_vit")


MNIST_VIT = Setup(
    name="mnist-vit",
    metric="error",
    build=build_mnist_vit,
    load=data.load_mnist_sequences,
    loss="sparse_categorical_crossentropy",
    epochs=10,
    batch_size=128,
    learning_rate=1e-3,
    threshold=1e-2,
    units=[
        (label.format(block), name.format(block), side)
        for block in range(1, VIT_BLOCKS + 1)
        for label, name, side in (
            ("heads {}", "block{}_attention", "heads"),
            ("ff {}", "block{}_ff1", "units"),
        )
    ],
    variants=("dropneuron", "unpenalized"),
    finetune_epochs=2,
    # Whole sublayers of the last blocks can die; a residual block survives
    # that, so pruning keeps such a layer at its strongest unit instead of
    # stopping.
    keep_last_unit=True,
    penalties={"heads": 1e-2, "ff_li": 5e-4, "ff_lo": 5e-4, "prox_li": 0.5, "prox_lo": 0.5},
)
