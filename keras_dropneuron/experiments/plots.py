"""Figures like the paper's: weight sparsity patterns and alive units per layer."""

import numpy as np

from keras_dropneuron import model_utils, supported_layers


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("Plots need matplotlib: pip install 'keras-dropneuron[plot]'") from None
    return plt


def _as_matrix(weight, layout):
    """Folds a kernel to (inputs, outputs): non-zero where any weight links the pair."""
    rank = weight.ndim
    ins = [a % rank for a in layout.input_axes]
    outs = [a % rank for a in layout.output_axes if a % rank not in ins]
    rest = [a for a in range(rank) if a not in ins + outs]
    moved = np.transpose(weight != 0, rest + ins + outs)
    matrix = moved.reshape(-1, *moved.shape[len(rest) :]).any(axis=0) if rest else moved
    return matrix.reshape(matrix.shape[0], -1)


def plot_sparsity_patterns(model, path):
    """Saves the non-zero pattern of every supported kernel (non-zeros black)."""
    plt = _pyplot()
    kernels = [
        (layer.name, _as_matrix(np.asarray(getattr(layer, lay.attribute).numpy()), lay))
        for layer in model_utils.iter_layers(model)
        for lay in supported_layers.weight_layouts(layer)
    ]
    fig, axes = plt.subplots(1, len(kernels), figsize=(3.2 * len(kernels), 3.4))
    for ax, (name, matrix) in zip(np.atleast_1d(axes), kernels, strict=True):
        ax.imshow(matrix, cmap="gray_r", aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{matrix.mean():.1%} links alive", fontsize=9)
        ax.set_xlabel("output unit")
        ax.set_ylabel("input unit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_alive_units(results, path):
    """Saves a bar chart of alive units per layer for each experiment run (first seed)."""
    plt = _pyplot()
    seen = {}
    for r in results:
        seen.setdefault((r["experiment"], r["variant"], r["method"]), r)
    fig, axes = plt.subplots(1, len(seen), figsize=(4 * len(seen), 3.2), squeeze=False)
    for ax, ((name, variant, method), r) in zip(axes[0], seen.items(), strict=True):
        labels = [u["label"] for u in r["units"]]
        ax.bar(labels, [u["total"] for u in r["units"]], color="lightgray", label="total")
        ax.bar(labels, [u["alive"] for u in r["units"]], color="black", label="alive")
        ax.set_title(f"{name}\n{variant}, {method}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
