"""The compression frontier: a grid of penalty strengths over seeds, trained and written.

`run_frontier` trains every configuration of a grid (`grid.parse_grid`) for
every seed with `runner.run_once`, writing one JSON per finished run into
`out/points/`; a run whose JSON is already there is not trained again, so a
killed sweep resumes where it stopped. `write_frontier` summarizes them
(`pareto.summarize_points`) into `frontier.json`, `frontier.md` and
`frontier.png` (the published records drawn with their sources), plus the
surviving input pixels of the MNIST networks as 28x28 images.
"""

import json
import pathlib
import textwrap

import keras
import numpy as np

from keras_dropneuron.experiments import pareto, runner
from keras_dropneuron.experiments.grid import DEFAULT_GRIDS, config_label, parse_grid, point_id
from keras_dropneuron.experiments.pareto import published_points, summarize_points
from keras_dropneuron.experiments.setups import SETUPS, Setup

__all__ = [
    "DEFAULT_GRIDS",
    "alive_input_rows",
    "load_points",
    "parse_grid",
    "run_frontier",
    "write_frontier",
]


def alive_input_rows(model: keras.Model, layer_name: str) -> np.ndarray:
    """Indices of the rows of a kernel that are not all zero (alive inputs).

    Args:
        model: The pruned model.
        layer_name: Name of a layer with a `kernel` whose first axis is its inputs.

    Returns:
        The sorted indices of the alive rows.
    """
    kernel = np.asarray(model.get_layer(layer_name).kernel.numpy())
    return np.flatnonzero(np.any(kernel != 0, axis=tuple(range(1, kernel.ndim))))


def _pixel_layer(setup: Setup, model: keras.Model) -> str | None:
    """The Dense layer whose kernel rows are the 784 MNIST pixels, or `None`."""
    _, name, side = setup.units[0]
    kernel = getattr(model.get_layer(name), "kernel", None) if side == "inputs" else None
    return name if kernel is not None and tuple(kernel.shape)[0] == 784 else None


def run_frontier(
    name: str,
    configs: list[dict],
    seeds: list[int],
    out: str | pathlib.Path,
    quick: bool = False,
    epochs: int | None = None,
    mnist: str | None = None,
    verbose: int = 0,
    variant: str = "dropneuron",
) -> tuple[int, int]:
    """Trains every configuration for every seed, skipping runs already written.

    Seeds are the outer loop, so every configuration has one seed early in a
    long sweep. Each finished run is written to `out/points/<id>.json` (the
    figures of `runner.run_once`, the configuration and the alive input rows);
    a run whose file exists is not trained again.

    Args:
        name: Experiment name (a key of `SETUPS`).
        configs: Configurations of `grid.parse_grid`.
        seeds: Seeds to train each configuration with.
        out: Output folder; the runs go to `out/points/`.
        quick: Quick runs (one epoch on a few samples, see `runner.run_once`).
            Defaults to `False`.
        epochs: Epochs per run; `None` is the set-up's. Defaults to `None`.
        mnist: Path of a local `mnist.npz`. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
        variant: Model variant. Defaults to `"dropneuron"`.

    Returns:
        `(trained, skipped)`: the numbers of runs trained and found.
    """
    setup = SETUPS[name]
    epochs = 1 if quick else (epochs or setup.epochs)
    points = pathlib.Path(out) / "points"
    points.mkdir(parents=True, exist_ok=True)
    trained = skipped = 0
    for seed in seeds:
        for config in configs:
            path = points / f"{point_id(name, config, seed, epochs, quick)}.json"
            if path.exists():
                skipped += 1
                continue
            print(f"== {name} / {config_label(config)} / seed {seed}", flush=True)
            result, model = runner.run_once(
                name,
                variant,
                seed,
                quick=quick,
                epochs=epochs,
                mnist=mnist,
                verbose=verbose,
                penalties=config["penalties"],
                auto_threshold=config["auto_threshold"],
                finetune_epochs=config.get("finetune_epochs"),
                training=config.get("training"),
            )
            result["config"] = config
            result["label"] = config_label(config)
            layer = _pixel_layer(setup, model)
            if layer is not None:
                result["alive_inputs"] = alive_input_rows(model, layer).tolist()
            partial = path.with_suffix(".part")
            partial.write_text(json.dumps(result, indent=1))
            partial.replace(path)  # a killed run leaves no half-written point
            trained += 1
    return trained, skipped


def load_points(out: str | pathlib.Path, name: str, quick: bool = False) -> list[dict]:
    """Every finished run of experiment `name` in `out/points/`.

    Args:
        out: Output folder of `run_frontier`.
        name: Experiment name.
        quick: Whether to load the quick runs or the full ones. Defaults to `False`.

    Returns:
        The runs, in the order of their file names.
    """
    points = []
    for path in sorted((pathlib.Path(out) / "points").glob("*.json")):
        point = json.loads(path.read_text())
        if point["experiment"] == name and point["quick"] == quick:
            points.append(point)
    return points


def write_frontier(
    out: str | pathlib.Path, name: str, quick: bool = False, plots: bool = True
) -> list[dict]:
    """Summarizes the runs in `out/points/` into `frontier.json`, `frontier.md` and figures.

    Args:
        out: Output folder of `run_frontier`.
        name: Experiment name.
        quick: Whether to summarize the quick runs or the full ones. Defaults
            to `False`.
        plots: Whether to draw `frontier.png` and the pixel images (needs
            matplotlib). Defaults to `True`.

    Returns:
        The rows of `summarize_points`.
    """
    out = pathlib.Path(out)
    points = load_points(out, name, quick)
    rows = summarize_points(points)
    document = {"experiment": name, "rows": rows, "published": published_points(name)}
    (out / "frontier.json").write_text(json.dumps(document, indent=1))
    table = pareto.markdown(rows, name)
    (out / "frontier.md").write_text(table + "\n")
    print(table)
    if plots and rows:
        from keras_dropneuron.experiments import plots as plotting

        plotting.plot_frontier(rows, published_points(name), out / "frontier.png")
        with_pixels = [p for p in points if "alive_inputs" in p]
        if with_pixels:
            _write_pixels(out, rows, with_pixels, plotting)
    return rows


def _write_pixels(out: pathlib.Path, rows: list[dict], points: list[dict], plotting) -> None:
    """One exact 28x28 PNG per run, and a grid for the configurations on the units front."""
    folder = out / "pixels"
    folder.mkdir(exist_ok=True)
    by_label = {}
    for p in points:
        mask = np.zeros(784, dtype=bool)
        mask[p["alive_inputs"]] = True
        stem = point_id(p["experiment"], p["config"], p["seed"], p["epochs"], p["quick"])
        plotting.save_pixel_mask(mask.reshape(28, 28), folder / f"{stem}.png")
        by_label.setdefault((p["label"], p["epochs"]), []).append((p["seed"], mask))
    front = [r for r in rows if "units" in r["front"]]
    panels = []
    for r in front:
        for seed, mask in sorted(by_label.get((r["label"], r["epochs"]), [])):
            label = textwrap.fill(r["label"].replace(",", ", "), 30)
            title = f"{label}\nseed {seed}: {int(mask.sum())} pixels"
            panels.append((title, mask.reshape(28, 28)))
    if panels:
        seeds = max(len(by_label.get((r["label"], r["epochs"]), [])) for r in front)
        plotting.plot_pixel_masks(panels, out / "pixels.png", columns=min(6, max(1, seeds)))
