"""Data sets of the paper's experiments: MNIST and the synthetic sparse regression.

The `load_*` functions take `(seed, mnist_path)` and return
`((x, y), (x_test, y_test), extra)`: the `Setup.load` of each experiment.
"""

import os
import pathlib

import numpy as np

MNIST_ENV = "KERAS_DROPNEURON_MNIST"
Arrays = tuple[np.ndarray, np.ndarray]


def load_mnist(path: str | os.PathLike | None = None) -> tuple[Arrays, Arrays]:
    """Loads MNIST as float32 images in [0, 1] and integer labels.

    The file is looked up in this order: `path`, the environment variable
    `KERAS_DROPNEURON_MNIST`, then `keras.datasets.mnist` (which downloads
    once and caches).

    Args:
        path: A local `.npz` in the layout of `keras.datasets.mnist`
            (`x_train`, `y_train`, `x_test`, `y_test`). Defaults to `None`.

    Returns:
        `(x_train, y_train), (x_test, y_test)` with images of shape
        `(n, 28, 28)`.

    Raises:
        FileNotFoundError: If `path` (or the environment variable) names a
            missing file.
        ValueError: If the file lacks the MNIST arrays.
        RuntimeError: If no local file is given and the download fails.
    """
    path = path or os.environ.get(MNIST_ENV)
    if path:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"MNIST file not found: {path}. Pass the path of a local mnist.npz "
                f"(argument `mnist` or environment variable {MNIST_ENV})."
            )
        try:
            with np.load(path) as f:
                arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(
                f"{path} is not an MNIST .npz with x_train, y_train, x_test and "
                f"y_test arrays: {error}"
            ) from None
    else:
        import keras

        try:
            (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
        except Exception as error:  # network errors come in many types
            raise RuntimeError(
                "Could not download MNIST (offline?). Point to a local copy with "
                f"--mnist PATH or the environment variable {MNIST_ENV}. Cause: {error}"
            ) from None
        arrays = [xtr, ytr, xte, yte]
    x_train, y_train, x_test, y_test = arrays
    scale = np.float32(1.0 / 255.0)
    return (
        (x_train.astype("float32") * scale, y_train.astype("int64")),
        (x_test.astype("float32") * scale, y_test.astype("int64")),
    )


def sparse_regression_data(
    seed: int, n_features: int = 20, n_informative: int = 2, n_samples: int = 1000
) -> tuple[Arrays, Arrays, np.ndarray]:
    """The paper's synthetic regression: `y = X w` with a sparse `w`, no noise.

    `X ~ N(0, 10^2)`; `n_informative` coefficients drawn from `N(0, 1)` (at
    least 0.5 in magnitude so the support is identifiable), the rest 0. Half the
    samples train, half test.

    Args:
        seed: Seed of the data.
        n_features: Number of features. Defaults to `20`.
        n_informative: Number of features with a coefficient. Defaults to `2`.
        n_samples: Number of samples, training and test together. Defaults to
            `1000`.

    Returns:
        `(x_train, y_train), (x_test, y_test), support` where `support` is the
        sorted array of informative feature indices.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 10.0, size=(n_samples, n_features)).astype("float32")
    support = np.sort(rng.choice(n_features, size=n_informative, replace=False))
    w = np.zeros(n_features, dtype="float32")
    magnitudes = rng.uniform(0.5, 2.0, size=n_informative)
    w[support] = magnitudes * rng.choice([-1.0, 1.0], size=n_informative)
    y = (x @ w)[:, None].astype("float32")
    half = n_samples // 2
    return (x[:half], y[:half]), (x[half:], y[half:]), support


def load_sparse_regression(seed: int, mnist_path: str | None = None) -> tuple:
    """`sparse_regression_data(seed)`, its support as `extra["support"]`."""
    train, test, support = sparse_regression_data(seed)
    return train, test, {"support": support}


def load_mnist_flat(seed: int, mnist_path: str | None = None) -> tuple:
    """MNIST with each image a row of 784 pixels."""
    (x, y), (xt, yt) = load_mnist(mnist_path)
    return (x.reshape(-1, 784), y), (xt.reshape(-1, 784), yt), {}


def load_mnist_autoencoder(seed: int, mnist_path: str | None = None) -> tuple:
    """Flat MNIST images as both inputs and targets."""
    (x, _), (xt, _) = load_mnist(mnist_path)
    x, xt = x.reshape(-1, 784), xt.reshape(-1, 784)
    return (x, x), (xt, xt), {}


def load_mnist_images(seed: int, mnist_path: str | None = None) -> tuple:
    """MNIST images of shape `(28, 28, 1)`, for convolutions."""
    (x, y), (xt, yt) = load_mnist(mnist_path)
    return (x[..., None], y), (xt[..., None], yt), {}


def load_mnist_sequences(seed: int, mnist_path: str | None = None) -> tuple:
    """MNIST images of shape `(28, 28)`: 28 time steps of 28 pixels, or 16 patches."""
    return (*load_mnist(mnist_path), {})
