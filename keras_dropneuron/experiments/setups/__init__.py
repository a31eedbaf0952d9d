"""The experiments: networks, training set-ups and published figures.

The paper's four experiments follow `PAPER.md` (the authors' scripts) where it
gives them: optimizer, learning rate, epochs, batch size, thresholds. The
penalty strengths are ours (the paper does not publish them in a usable form).
Three go beyond the paper: Caffe's LeNet-5 (the network of the published
records), a sequential-MNIST LSTM and a small Vision Transformer, the last two
each next to the same recipe without penalties.

One module per family: `dense` (sparse regression, autoencoder,
LeNet-300-100), `convolutional` (LeNet-5, Caffe's LeNet-5), `recurrent` (the
LSTM), `vit` (the Vision Transformer and its `PositionEmbedding`); `base`
holds `Setup`. `bn_cnn` (ResNet-20, a small MobileNetV2, LeNet-5 with a
separate Softmax) and `package_gru` (a stacked bidirectional GRU over
standard-library snippets) hold networks of the trained-start experiments,
which are not `Setup`s: `keras_dropneuron.experiments.trained_setups` lists
them (with the LSTM and the ViT built without penalties) and `trained_start`
trains them without penalties, then prunes them with `prune_to_budget`.
"""

from keras_dropneuron.experiments.setups.base import Setup
from keras_dropneuron.experiments.setups.convolutional import LENET_5, LENET_5_CAFFE
from keras_dropneuron.experiments.setups.dense import (
    AUTOENCODER,
    LENET_300_100,
    SPARSE_REGRESSION,
)
from keras_dropneuron.experiments.setups.recurrent import SEQUENTIAL_MNIST_LSTM
from keras_dropneuron.experiments.setups.vit import MNIST_VIT, PositionEmbedding

SETUPS: dict[str, Setup] = {
    s.name: s
    for s in (
        SPARSE_REGRESSION,
        AUTOENCODER,
        LENET_300_100,
        LENET_5,
        LENET_5_CAFFE,
        SEQUENTIAL_MNIST_LSTM,
        MNIST_VIT,
    )
}

__all__ = [
    "AUTOENCODER",
    "LENET_300_100",
    "LENET_5",
    "LENET_5_CAFFE",
    "MNIST_VIT",
    "SEQUENTIAL_MNIST_LSTM",
    "SETUPS",
    "SPARSE_REGRESSION",
    "PositionEmbedding",
    "Setup",
]
