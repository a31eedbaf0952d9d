"""Figures like the paper's: weight sparsity patterns and alive units per layer.

Several panels are laid out as a grid at most `COLUMNS` wide, so that a figure
still reads at the width of a README (about 900 pixels). Also: the compression
frontier with the published records, and the surviving MNIST input pixels.
"""

import pathlib

import keras
import numpy as np

from keras_dropneuron import layer_rules, model_utils
from keras_dropneuron.layer_rules.base import attribute


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("Plots need matplotlib: pip install 'keras-dropneuron[plot]'") from None
    return plt


COLUMNS = 3  # panels per row
PANEL = (3.0, 2.6)  # inches per panel
DPI = 100


def _grid(plt, count, columns=COLUMNS, panel=PANEL):
    """A figure with `count` panels in rows of at most `columns`; extra axes hidden."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(panel[0] * columns, panel[1] * rows), squeeze=False
    )
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _as_matrix(weight, layout):
    """Folds a kernel to (inputs, outputs): non-zero where any weight links the pair."""
    rank = weight.ndim
    ins = [a % rank for a in layout.input_axes]
    outs = [a % rank for a in layout.output_axes if a % rank not in ins]
    rest = [a for a in range(rank) if a not in ins + outs]
    moved = np.transpose(weight != 0, rest + ins + outs)
    matrix = moved.reshape(-1, *moved.shape[len(rest) :]).any(axis=0) if rest else moved
    return matrix.reshape(matrix.shape[0], -1)


def plot_sparsity_patterns(model: keras.Model, path: str | pathlib.Path) -> str | pathlib.Path:
    """Saves the non-zero pattern of every supported kernel (non-zeros black).

    Args:
        model: A pruned model.
        path: The image file to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    kernels = [
        (
            # Layers with several kernels (recurrent, attention) name each one.
            layer.name if len(layouts) == 1 else f"{layer.name} {lay.attribute}",
            _as_matrix(np.asarray(attribute(layer, lay.attribute).numpy()), lay),
        )
        for layer in model_utils.iter_layers(model)
        for layouts in [layer_rules.weight_layouts(layer)]
        for lay in layouts
    ]
    fig, axes = _grid(plt, len(kernels), panel=(3.0, 3.0))
    for ax, (name, matrix) in zip(axes, kernels, strict=True):
        ax.imshow(matrix, cmap="gray_r", aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{matrix.mean():.1%} links alive", fontsize=9)
        ax.set_xlabel("output unit")
        ax.set_ylabel("input unit")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_alive_units(results: list[dict], path: str | pathlib.Path) -> str | pathlib.Path:
    """Saves a bar chart of alive units per layer for each experiment run (first seed).

    Args:
        results: Results of `runner.run_once`.
        path: The image file to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    seen = {}
    for r in results:
        seen.setdefault((r["experiment"], r["variant"], r["method"]), r)
    fig, axes = _grid(plt, len(seen), panel=(3.0, 2.9))
    for ax, ((name, variant, method), r) in zip(axes, seen.items(), strict=True):
        labels = [u["label"] for u in r["units"]]
        ax.bar(labels, [u["total"] for u in r["units"]], color="lightgray", label="total")
        ax.bar(labels, [u["alive"] for u in r["units"]], color="black", label="alive")
        ax.set_title(f"{name}\n{variant}, {method}", fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def save_pixel_mask(mask: np.ndarray, path: str | pathlib.Path) -> str | pathlib.Path:
    """Saves a 2-D boolean mask as an image of the same size: alive white, dead black.

    One image pixel per input pixel (no resampling), so reading the file back
    gives the mask exactly.

    Args:
        mask: A 2-D boolean array.
        path: The image file to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    plt.imsave(path, np.asarray(mask, dtype="float32"), cmap="gray", vmin=0.0, vmax=1.0)
    return path


def plot_pixel_masks(
    panels: list[tuple[str, np.ndarray]], path: str | pathlib.Path, columns: int = 3
) -> str | pathlib.Path:
    """Saves `(title, 2-D boolean mask)` panels (e.g. surviving MNIST pixels) as a grid.

    Args:
        panels: `(title, mask)` pairs.
        path: The image file to write.
        columns: Panels per row at most. Defaults to `3`.

    Returns:
        `path`.
    """
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels), columns=columns, panel=(2.4, 2.9))
    for ax, (title, mask) in zip(axes, panels, strict=True):
        ax.imshow(
            np.asarray(mask, dtype="float32"), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_frontier(
    rows: list[dict], published: list[dict], path: str | pathlib.Path
) -> str | pathlib.Path:
    """Saves the metric against units, parameters and MACs.

    Our runs with their spread over seeds, their Pareto front (a line), and the
    published records (stars, each labelled with its source).

    Args:
        rows: Rows of `pareto.summarize_points`.
        published: Records of `pareto.published_points`.
        path: The image file to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    import matplotlib.ticker

    metric = rows[0]["metric"]
    sizes = [
        ("units", "units_total", "units alive"),
        ("slim_params", "slim_params", "slim parameters"),
        ("slim_macs", "slim_macs", "slim multiply-adds"),
    ]
    fig, axes = _grid(plt, 4, columns=2, panel=(4.4, 3.4))
    for ax, (size, published_key, label) in zip(axes, sizes, strict=False):
        x = np.array([r[size] for r in rows])
        y = np.array([r["mean"] for r in rows])
        err = np.array([r["std"] for r in rows])
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt="o",
            color="tab:blue",
            ms=4,
            capsize=2,
            label="this project (mean ± sd over seeds)",
        )
        front = sorted((r[size], r["mean"]) for r in rows if size in r["front"])
        if front:
            ax.plot(*zip(*front, strict=True), "-", color="tab:blue", lw=1, label="Pareto front")
        _published_stars(ax, published, published_key, metric)
        if size != "units":
            ax.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k")
            )
        ax.margins(x=0.08, y=0.12)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel(f"test {metric}" + (" (%)" if metric == "error" else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _frontier_legend(plt, axes, published, metric)
    fig.suptitle(f"{rows[0]['experiment']}: compression frontier", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _published_stars(ax, published: list[dict], key: str, metric: str) -> None:
    """The published records as stars, each with its short name (the full one in the legend)."""
    for i, p in enumerate(published):
        if key in p:
            ax.plot(p[key], p[metric], "*", color="tab:red", ms=10)
            # Every other label below its star: records at the same error and
            # close sizes (LeNet-5-Caffe's two at 1.0%) would overlap.
            ax.annotate(
                p["source"].split(" (")[0],
                (p[key], p[metric]),
                fontsize=7,
                color="tab:red",
                xytext=(5, 5 if i % 2 == 0 else -11),
                textcoords="offset points",
            )


def _frontier_legend(plt, axes, published: list[dict], metric: str) -> None:
    """The fourth panel: the legend of the first, then one line per published record."""
    legend = axes[3]
    legend.set_visible(True)
    legend.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="*", color="tab:red", ls="", ms=10))
    labels.append("published:")
    for p in published:
        handles.append(plt.Line2D([], [], ls=""))
        unit = "%" if metric == "error" else ""
        labels.append(f"{p['source']}: {'-'.join(map(str, p['units']))} at {p[metric]:g}{unit}")
    legend.legend(handles, labels, loc="center", fontsize=8)


def plot_accuracy_vs_macs(
    rows: list[dict],
    path: str | pathlib.Path,
    anchors: dict[str, tuple[float, float]] | None = None,
) -> str | pathlib.Path:
    """Saves the test accuracy change against the fraction of the multiply-adds kept.

    The change is in points, each slim model against its own seed's trained
    model, so that results on other data sets (published anchors) share the
    axis. One colour per experiment: each slim model at its verified MAC
    ratio (dots), a line through the means over seeds from the trained
    models at (1.0, 0), and each bound as a hollow triangle at `(target,
    -bound)`: a slim model meets it at or above the triangle, at or left of
    its x. Rows without a slim model are left out.

    Args:
        rows: Rows of `trained_start.run_trained_start`.
        path: The image file to write.
        anchors: More labelled points, `{label: (fraction of MACs, change in
            points)}` (e.g. a published result: -0.27 for 76.10% -> 75.83%).
            Defaults to `None`.

    Returns:
        `path`.

    Example:

    >>> plot_accuracy_vs_macs(rows, "accuracy_vs_macs.png")
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    experiments = list(dict.fromkeys(r["experiment"] for r in rows))
    for i, name in enumerate(experiments):
        _accuracy_vs_macs_lines(ax, [r for r in rows if r["experiment"] == name], f"C{i}", name)
    for label, (x, y) in (anchors or {}).items():
        ax.plot(x, y, "*", color="black", ms=10)
        ax.annotate(label, (x, y), fontsize=7, xytext=(5, -10), textcoords="offset points")
    ax.plot([], [], "v", mfc="none", color="gray", label="bound (most points lost)")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xlim(0.0, 1.05)
    ax.set_xlabel("fraction of multiply-adds kept", fontsize=8)
    ax.set_ylabel("test accuracy change (points)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _accuracy_vs_macs_lines(ax, rows: list[dict], color: str, name: str) -> None:
    """One experiment: its slim models as dots, the means as a line, its bounds as triangles."""
    slim = {}  # target -> [(MAC ratio, change in points)] over seeds
    for r in rows:
        if r.get("test_accuracy_after") is not None and r.get("mac_ratio") is not None:
            change = 100 * (r["test_accuracy_after"] - r["test_accuracy_before"])
            slim.setdefault(r["target_macs"], []).append((r["mac_ratio"], change))
    dots = [p for points in slim.values() for p in points]
    if dots:
        ax.plot(*zip(*dots, strict=True), "o", color=color, ms=4, alpha=0.6)
    means = [(1.0, 0.0)] + [tuple(np.mean(p, axis=0)) for p in slim.values()]
    ax.plot(*zip(*sorted(means), strict=True), "-", color=color, lw=1, label=name)
    bounds = {
        r["target_macs"]: r["bound_points"] for r in rows if r.get("bound_points") is not None
    }
    for target, bound in bounds.items():
        ax.plot(target, -bound, "v", mfc="none", color=color, ms=7)
