"""The frontier's tables: Pareto front, one row per configuration, the published records.

`summarize_points` groups finished runs by configuration (means, spreads and
per-seed values) and marks the rows that `pareto_front` finds on each size
axis; `published_points` gives the neuron-level records of other methods, and
`markdown` writes both as tables.
"""

import itertools

import numpy as np

from keras_dropneuron.experiments.setups import SETUPS
from keras_dropneuron.experiments.summary import format_metric

SIZES = ("units", "slim_params", "slim_macs")  # the frontier's size axes
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


def pareto_front(points: list, keys: list[str]) -> list[int]:
    """Indices of the points that no other point dominates (every key: lower is better).

    A point dominates another if it is no worse on every key and better on at
    least one. Equal points do not dominate each other.

    Args:
        points: A list of dicts (or objects indexable by `keys`).
        keys: The keys to minimize.

    Returns:
        The sorted list of indices of the non-dominated points.

    Example:

    >>> pareto_front([{"e": 1, "s": 2}, {"e": 2, "s": 1}, {"e": 2, "s": 2}], ["e", "s"])
    [0, 1]
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


def _spread(values) -> tuple[float, float]:
    values = np.asarray(values, dtype="float64")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _row(label: str, epochs: int, runs: list[dict]) -> dict:
    """The summary row of the runs (one per seed) of one configuration."""
    runs = sorted(runs, key=lambda r: r["seed"])
    metric = SETUPS[runs[0]["experiment"]].metric
    mean, std = _spread([r[metric] for r in runs])
    layers = []
    for i, unit in enumerate(runs[0]["units"]):
        m, s = _spread([r["units"][i]["alive"] for r in runs])
        layers.append({"label": unit["label"], "alive": m, "std": s, "total": unit["total"]})
    totals = [sum(u["alive"] for u in r["units"]) for r in runs]
    return {
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
        "units": float(np.mean(totals)),
        "units_std": _spread(totals)[1],
        "slim_params": float(np.mean([r["slim_params"] for r in runs])),
        "params": runs[0]["params"],
        "slim_macs": float(np.mean([r["slim_macs"] for r in runs])),
        "macs": runs[0]["macs"],
        "speedup": float(np.median([r["speedup"] for r in runs])),
        "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "slim_exact": all(r["slim_matches"] for r in runs),
        "chosen_thresholds": [r.get("chosen_threshold") for r in runs],
    }


def summarize_points(points: list[dict]) -> list[dict]:
    """One row per (configuration, epochs): means, standard deviations, per-seed values.

    Every row also says on which size axes it lies on the Pareto front of the
    metric's mean against that size (`front`, a list of `SIZES`).

    Args:
        points: Finished runs (`runner.run_once` results with `label` and
            `config`), of one experiment.

    Returns:
        The rows, sorted by units alive, then by the metric's mean.
    """
    groups = {}
    for p in points:
        groups.setdefault((p["label"], p["epochs"]), []).append(p)
    rows = [_row(label, epochs, runs) for (label, epochs), runs in groups.items()]
    rows.sort(key=lambda r: (r["units"], r["mean"]))
    for row in rows:
        row["front"] = []
    for size in SIZES:
        for i in pareto_front(rows, ["mean", size]):
            rows[i]["front"].append(size)
    return rows


def published_points(name: str) -> list[dict]:
    """The published records of an experiment, with their cost where it follows from units.

    Args:
        name: Experiment name.

    Returns:
        Copies of the `PUBLISHED` records with `units_total`, and for the
        Dense chains `slim_macs` and `slim_params` (weights plus biases);
        `[]` for an experiment without records.
    """
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


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def markdown(rows: list[dict], name: str) -> str:
    """The frontier as a Markdown table, then the published records.

    Args:
        rows: Rows of `summarize_points`.
        name: Experiment name.

    Returns:
        The tables, lines joined by newlines.
    """
    metric = SETUPS[name].metric
    lines = [
        f"| configuration | epochs | seeds | {metric} mean ± sd (per seed) | units alive "
        "(mean ± sd per layer) | slim params | slim MACs | speed-up | s per run "
        "| slim exact | Pareto front |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = "/".join(format_metric(metric, v).rstrip("%") for v in r["per_seed"])
        units = "-".join(f"{u['alive']:.0f}±{u['std']:.0f}" for u in r["layers"])
        lines.append(
            f"| {r['label']} | {r['epochs']} ({r['finetune_epochs']} fine-tuning) "
            f"| {len(r['seeds'])} | {format_metric(metric, r['mean'])} ± "
            f"{format_metric(metric, r['std'])} ({per_seed}) | {units} "
            f"| {r['slim_params']:,.0f} / {r['params']:,} "
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
                f"| {p['source']} | {format_metric(metric, p[metric])} "
                f"| {'-'.join(map(str, p['units']))} | {_count(p.get('slim_params'))} "
                f"| {_count(p.get('slim_macs'))} |"
            )
    return "\n".join(lines)
