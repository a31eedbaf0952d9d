"""One worker of a MultiWorkerMirroredStrategy run, started by `test_distributed.py`.

Usage: `python mwms_worker.py OUT.npz` with `TF_CONFIG` describing the cluster.

Trains the small model of `build()` with DropNeuron regularizers and `PruneCallback`
and writes every weight, the training logs and the number of replicas to `OUT.npz`.
The test trains the same model on one device with `train()` and compares.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from keras_dropneuron import DropNeuronRegularizer, PruneCallback  # noqa: E402

EPOCHS, GLOBAL_BATCH, THRESHOLD, STRENGTH = 3, 32, 0.05, 1e-2


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12)).astype("float32")
    y = (x[:, :2].sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def build(strength=STRENGTH, optimizer="sgd", loss="binary_crossentropy"):
    """A seeded MLP with strong group penalties on both hidden layers."""
    keras.utils.set_random_seed(7)
    reg = DropNeuronRegularizer(li=strength, lo=strength)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=reg, name="h1"),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=reg, name="h2"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    opt = keras.optimizers.SGD(0.1) if optimizer == "sgd" else keras.optimizers.Adam(1e-2)
    model.compile(opt, loss)
    return model


def work_around_keras_multi_worker_fit(model, strategy):
    """Lets Keras 3 `fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    1. `fit` first reduces one distributed input batch in eager mode to build the model
       symbolically, which the strategy's collectives refuse. This model is built by
       `keras.Input` and its optimizer is built here, so that step is skipped.
    2. Each step's logs are averaged across workers over axis 0, which scalars do not
       have: they get one. The values are equal on every replica (they come from
       synchronised metrics), so the average is the value.
    """
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    step = model.train_step
    model.train_step = lambda batch: {k: ops.reshape(v, (1,)) for k, v in step(batch).items()}


def train(model, multi_worker=False):
    """Fits `model` for EPOCHS epochs with PruneCallback; returns the History."""
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    if multi_worker:
        # Each worker takes its half of every global batch.
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        dataset = dataset.with_options(options)
    return model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=[PruneCallback(THRESHOLD)])


def main(out):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build()
    work_around_keras_multi_worker_fit(model, strategy)
    history = train(model, multi_worker=True)
    np.savez(
        out,
        replicas=strategy.num_replicas_in_sync,
        loss=np.asarray(history.history["loss"]),
        sparsity=np.asarray(history.history["sparsity"]),
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    main(sys.argv[1])
