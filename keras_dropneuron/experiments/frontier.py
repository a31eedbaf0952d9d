"""The compression frontier: a grid of penalty strengths over seeds, and its Pareto front.

`run_frontier` trains every point of a grid (penalty strengths, and the
automatic threshold) for every seed with `runner.run_once`, writing one JSON
per finished run into `out/points/`; a run whose JSON is already there is not
trained again, so a killed sweep resumes where it stopped. `summarize_points`
groups the runs by configuration (means, spreads and per-seed values),
`pareto_front` marks the configurations no other one beats on both the metric
and the size, and `write_frontier` writes `frontier.json`, `frontier.md` and
`frontier.png` (the published records drawn with their sources), plus the
surviving input pixels of the MNIST networks as 28x28 images.
"""

import itertools
import json
import pathlib
import textwrap

import numpy as np

from keras_dropneuron.checks import check_non_negative_float
from keras_dropneuron.experiments import methods, runner
from keras_dropneuron.experiments.setups import SETUPS

# Grid keys besides the set-up's penalty strengths (`runner.run_once` arguments,
# and the training methods of `methods.OPTIONS`).
OPTIONS = ("auto_threshold", "finetune_epochs", *methods.OPTIONS)
SIZES = ("units", "slim_params", "slim_macs")  # the frontier's size axes
SIZE_LABELS = {
    "units": "units alive (sum over the counted layers)",
    "slim_params": "parameters of the slim model",
    "slim_macs": "multiply-adds of the slim model",
}
# Outputs of the Dense chains whose published points give units only: their
# parameters and multiply-adds follow from the units (weights plus biases).
# Not the convolutional networks: there they depend on which fc1 inputs the
# records kept, so their published points give the metric and units only.
_CHAIN_OUTPUTS = {"lenet-300-100": 10, "autoencoder": 784, "sparse-regression": 1}

# Published neuron-level records (../shared/PAPER.md): units alive in the order
# of `Setup.units`, final metric, source.
PUBLISHED = {
    "lenet-300-100": [
        {"source": "DropNeuron (Pan et al. 2016)", "error": 1.83, "units": [542, 83, 61]},
        {
            "source": "Bayesian Compression (Louizos et al. 2017)",
            "error": 1.8,
            "units": [278, 98, 13],
        },
        {"source": "L0 (Louizos et al. 2018)", "error": 1.6, "units": [266, 88, 33]},
        {"source": "VIBNet (Dai et al. 2018)", "error": 1.6, "units": [97, 71, 33]},
    ],
    "autoencoder": [
        {"source": "DropNeuron (Pan et al. 2016)", "mse": 0.0121, "units": [420, 127, 61, 121]}
    ],
    "sparse-regression": [
        {"source": "DropNeuron (Pan et al. 2016)", "nmse": 3.6e-4, "units": [2, 1]}
    ],
    # conv1 filters - conv2 filters - fc1 inputs - fc1 units (20-50-800-500).
    "lenet-5-caffe": [
        {
            "source": "Bayesian Compression GHS (Louizos et al. 2017)",
            "error": 1.0,
            "units": [5, 10, 76, 16],
        },
        {"source": "L0-sep (Louizos et al. 2018)", "error": 1.0, "units": [9, 18, 65, 25]},
    ],
}

# A small grid per experiment for `keras-dropneuron frontier` without `--grid`.
DEFAULT_GRIDS = {
    "lenet-300-100": ["li+lo=2e-4,3e-4,4e-4", "auto_threshold=0"],
    "autoencoder": ["li+lo+output_lo=2e-6,3e-6,6e-6"],
    "lenet-5": ["li+lo=3e-4,5e-4,1e-3"],
    "lenet-5-caffe": ["li+lo+conv_li+conv_lo=1e-3,1.5e-3,2e-3"],
    "sparse-regression": ["li+lo=0.03,0.1,0.3"],
}


def parse_grid(name, specs):
    """Returns the configurations of a grid: the product of its axes.

    Args:
        name: Experiment name (a key of `SETUPS`).
        specs: Strings `KEY=V1,V2,...`; `KEY` is a penalty strength of the
            set-up (`li`, `lo`, ...) or `auto_threshold`, and `KEY1+KEY2=...`
            gives several keys the same value.

    Returns:
        A list of dicts `{"penalties": {...}, "auto_threshold": float | None}`.

    Raises:
        ValueError: For an unknown experiment, a malformed spec, an unknown or
            repeated key, or a value that is not a finite float >= 0.

    Example:

    >>> parse_grid("lenet-300-100", ["li+lo=2e-4,4e-4", "auto_threshold=0"])
    """
    if name not in SETUPS:
        raise ValueError(
            f"Invalid argument `name`: expected one of {sorted(SETUPS)}. Received: {name!r}"
        )
    known = set(SETUPS[name].penalties) | set(OPTIONS)
    axes, seen = [], set()
    for spec in specs:
        keys, sep, values = str(spec).partition("=")
        keys = [k.strip() for k in keys.split("+")]
        if not sep or not all(keys) or not values.strip():
            raise ValueError(f"Invalid grid axis: expected KEY=V1,V2,... Received: {spec!r}")
        for key in keys:
            if key not in known:
                raise ValueError(
                    f"Invalid grid key for experiment {name!r}: expected one of "
                    f"{sorted(known)}. Received: {key!r}"
                )
            if key in seen:
                raise ValueError(f"Invalid grid: the key {key!r} is given twice")
            seen.add(key)
        numbers = [
            check_non_negative_float(f"grid[{'+'.join(keys)}]", float(v))
            for v in _floats(spec, values)
        ]
        whole = {"finetune_epochs", *methods.WHOLE} & set(keys)
        if whole and any(v != int(v) for v in numbers):
            raise ValueError(f"Invalid grid: {sorted(whole)} must be whole numbers: {spec!r}")
        axes.append([dict.fromkeys(keys, v) for v in numbers])
    configs = []
    for combination in itertools.product(*axes):
        merged = {k: v for part in combination for k, v in part.items()}
        auto = merged.pop("auto_threshold", None)
        config = {"penalties": merged, "auto_threshold": auto}
        if "finetune_epochs" in merged:  # absent unless given: older points keep their ids
            config["finetune_epochs"] = int(merged.pop("finetune_epochs"))
        training = {k: merged.pop(k) for k in methods.OPTIONS if k in merged}
        if training:
            config["training"] = methods.check_training(training, auto)
        configs.append(config)
    return configs


def _floats(spec, values):
    try:
        return [float(v) for v in values.split(",")]
    except ValueError:
        raise ValueError(
            f"Invalid grid axis: values must be numbers. Received: {spec!r}"
        ) from None


def _number(value):
    """`value` in 6 significant digits, or all of them where 6 would name another number."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def config_label(config):
    """A short, stable name of a configuration, e.g. `li=0.0002,lo=0.0002,auto=0`."""
    parts = [f"{k}={_number(v)}" for k, v in sorted(config["penalties"].items())]
    if config.get("auto_threshold") is not None:
        parts.append(f"auto={_number(config['auto_threshold'])}")
    if config.get("finetune_epochs") is not None:
        parts.append(f"ft={config['finetune_epochs']}")
    parts += [f"{k}={_number(v)}" for k, v in sorted(config.get("training", {}).items())]
    return ",".join(parts) or "defaults"


def point_id(name, config, seed, epochs, quick):
    """The file stem of one run: experiment, configuration, epochs, seed."""
    tail = "_quick" if quick else ""
    return f"{name}_{config_label(config)}_e{epochs}_seed{seed}{tail}".replace(",", "_")


def alive_input_rows(model, layer_name):
    """Indices of the rows of a Dense kernel that are not all zero (alive inputs)."""
    kernel = np.asarray(model.get_layer(layer_name).kernel.numpy())
    return np.flatnonzero(np.any(kernel != 0, axis=tuple(range(1, kernel.ndim))))


def _pixel_layer(setup, model):
    """The Dense layer whose kernel rows are the 784 MNIST pixels, or `None`."""
    _, name, side = setup.units[0]
    kernel = getattr(model.get_layer(name), "kernel", None) if side == "inputs" else None
    return name if kernel is not None and tuple(kernel.shape)[0] == 784 else None


def run_frontier(
    name,
    configs,
    seeds,
    out,
    quick=False,
    epochs=None,
    mnist=None,
    verbose=0,
    variant="dropneuron",
):
    """Trains every configuration for every seed, skipping runs already written.

    Seeds are the outer loop, so every configuration has one seed early in a
    long sweep. Each finished run is written to `out/points/<id>.json` (the
    figures of `runner.run_once`, the configuration and the alive input rows);
    a run whose file exists is not trained again.

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


def load_points(out, name, quick=False):
    """Every finished run of experiment `name` in `out/points/` (quick runs or full ones)."""
    points = []
    for path in sorted((pathlib.Path(out) / "points").glob("*.json")):
        point = json.loads(path.read_text())
        if point["experiment"] == name and point["quick"] == quick:
            points.append(point)
    return points


def pareto_front(points, keys):
    """Indices of the points that no other point dominates (every key: lower is better).

    A point dominates another if it is no worse on every key and better on at
    least one. Equal points do not dominate each other.

    Args:
        points: A list of dicts (or objects indexable by `keys`).
        keys: The keys to minimize.

    Returns:
        The sorted list of indices of the non-dominated points.
    """
    values = [tuple(float(p[k]) for k in keys) for p in points]
    front = []
    for i, a in enumerate(values):
        dominated = any(
            all(bj <= aj for aj, bj in zip(a, b, strict=True)) and b != a for b in values
        )
        if not dominated:
            front.append(i)
    return front


def _spread(values):
    values = np.asarray(values, dtype="float64")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize_points(points):
    """One row per (configuration, epochs): means, standard deviations, per-seed values.

    Every row also says on which size axes it lies on the Pareto front of the
    metric's mean against that size (`front`, a list of `SIZES`).
    """
    groups = {}
    for p in points:
        groups.setdefault((p["label"], p["epochs"]), []).append(p)
    rows = []
    for (label, epochs), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        metric = SETUPS[runs[0]["experiment"]].metric
        mean, std = _spread([r[metric] for r in runs])
        layers = []
        for i, unit in enumerate(runs[0]["units"]):
            m, s = _spread([r["units"][i]["alive"] for r in runs])
            layers.append({"label": unit["label"], "alive": m, "std": s, "total": unit["total"]})
        row = {
            "experiment": runs[0]["experiment"],
            "label": label,
            "config": runs[0]["config"],
            "epochs": epochs,
            "finetune_epochs": runs[0]["finetune_epochs"],
            "seeds": [r["seed"] for r in runs],
            "metric": metric,
            "mean": mean,
            "std": std,
            "per_seed": [r[metric] for r in runs],
            "layers": layers,
            "units": float(np.mean([sum(u["alive"] for u in r["units"]) for r in runs])),
            "units_std": _spread([sum(u["alive"] for u in r["units"]) for r in runs])[1],
            "slim_params": float(np.mean([r["slim_params"] for r in runs])),
            "params": runs[0]["params"],
            "slim_macs": float(np.mean([r["slim_macs"] for r in runs])),
            "macs": runs[0]["macs"],
            "speedup": float(np.median([r["speedup"] for r in runs])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "slim_exact": all(r["slim_matches"] for r in runs),
            "chosen_thresholds": [r.get("chosen_threshold") for r in runs],
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["units"], r["mean"]))
    for row in rows:
        row["front"] = []
    for size in SIZES:
        for i in pareto_front(rows, ["mean", size]):
            rows[i]["front"].append(size)
    return rows


def published_points(name):
    """The published records of `name`, with parameters and multiply-adds from their units."""
    points = []
    outputs = _CHAIN_OUTPUTS.get(name)
    for record in PUBLISHED.get(name, []):
        point = dict(record)
        point["units_total"] = sum(record["units"])
        if outputs is not None:
            widths = [*record["units"], outputs]
            macs = sum(a * b for a, b in itertools.pairwise(widths))
            point["slim_macs"] = macs
            point["slim_params"] = macs + sum(widths[1:])
        points.append(point)
    return points


def _fmt(metric, value):
    return f"{value:.2f}%" if metric == "error" else f"{value:.3g}"


def _count(value):
    return "-" if value is None else f"{value:,}"


def markdown(rows, name):
    """The frontier as a Markdown table, then the published records."""
    metric = SETUPS[name].metric
    lines = [
        f"| configuration | epochs | seeds | {metric} mean ± sd (per seed) | units alive "
        "(mean ± sd per layer) | slim params | slim MACs | speed-up | s per run "
        "| slim exact | Pareto front |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = "/".join(_fmt(metric, v).rstrip("%") for v in r["per_seed"])
        units = "-".join(f"{u['alive']:.0f}±{u['std']:.0f}" for u in r["layers"])
        lines.append(
            f"| {r['label']} | {r['epochs']} ({r['finetune_epochs']} fine-tuning) "
            f"| {len(r['seeds'])} | {_fmt(metric, r['mean'])} ± {_fmt(metric, r['std'])} "
            f"({per_seed}) | {units} | {r['slim_params']:,.0f} / {r['params']:,} "
            f"| {r['slim_macs']:,.0f} / {r['macs']:,} | {r['speedup']:.2f}x "
            f"| {r['train_seconds']:.0f} | {'yes' if r['slim_exact'] else 'NO'} "
            f"| {', '.join(r['front']) or '-'} |"
        )
    published = published_points(name)
    if published:
        lines += [
            "",
            f"| published | {metric} | units alive | params | MACs |",
            "|---|---|---|---|---|",
        ]
        for p in published:
            lines.append(
                f"| {p['source']} | {_fmt(metric, p[metric])} "
                f"| {'-'.join(map(str, p['units']))} | {_count(p.get('slim_params'))} "
                f"| {_count(p.get('slim_macs'))} |"
            )
    return "\n".join(lines)


def write_frontier(out, name, quick=False, plots=True):
    """Summarizes the runs in `out/points/` into `frontier.json`, `frontier.md` and figures.

    Returns:
        The rows of `summarize_points`.
    """
    out = pathlib.Path(out)
    points = load_points(out, name, quick)
    rows = summarize_points(points)
    document = {"experiment": name, "rows": rows, "published": published_points(name)}
    (out / "frontier.json").write_text(json.dumps(document, indent=1))
    table = markdown(rows, name)
    (out / "frontier.md").write_text(table + "\n")
    print(table)
    if plots and rows:
        from keras_dropneuron.experiments import plots as plotting

        plotting.plot_frontier(rows, published_points(name), out / "frontier.png")
        with_pixels = [p for p in points if "alive_inputs" in p]
        if with_pixels:
            _write_pixels(out, rows, with_pixels, plotting)
    return rows


def _write_pixels(out, rows, points, plotting):
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
