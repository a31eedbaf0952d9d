"""The `reproduce` tables: results grouped over seeds, next to the paper's figures."""

import numpy as np

from keras_dropneuron.experiments.setups import SETUPS


def format_metric(metric: str, value: float) -> str:
    """`value` as the tables print `metric`: `"1.83%"` for an error, 3 digits otherwise."""
    return f"{value:.2f}%" if metric == "error" else f"{value:.3g}"


def _method_label(result: dict) -> str:
    """The method, with the run's penalty overrides: `"threshold (li=0.0002)"`."""
    overrides = ", ".join(f"{k}={v:g}" for k, v in sorted(result.get("penalties", {}).items()))
    return f"{result['method']} ({overrides})" if overrides else result["method"]


def _row(name: str, variant: str, method: str, runs: list[dict]) -> dict:
    """The summary row of the runs (one per seed) of one group."""
    metric = SETUPS[name].metric
    values = np.array([r[metric] for r in runs])
    units = [
        f"{np.mean([r['units'][i]['alive'] for r in runs]):.0f}/{runs[0]['units'][i]['total']}"
        for i in range(len(runs[0]["units"]))
    ]
    row = {
        "experiment": name,
        "variant": variant,
        "method": method,
        "seeds": len(runs),
        "metric": metric,
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "worst": float(values.max()),
        "compression": float(np.mean([r["compression"] for r in runs])),
        "units": " - ".join(units),
        "slim_params": float(np.mean([r["slim_params"] for r in runs])),
        "params": runs[0]["params"],
        "slim_macs": float(np.mean([r["slim_macs"] for r in runs])),
        "macs": runs[0]["macs"],
        "speedup": float(np.median([r["speedup"] for r in runs])),
        "slim_exact": all(r["slim_matches"] for r in runs),
    }
    if "support_exact" in runs[0]:
        row["support_exact"] = f"{sum(r['support_exact'] for r in runs)}/{len(runs)}"
    paper = SETUPS[name].paper
    row["paper"] = paper.get(variant) or paper.get("dropneuron", {})
    return row


def summarize(results: list[dict]) -> list[dict]:
    """Groups results by experiment, variant, method and penalty overrides.

    Args:
        results: Results of `runner.run_once`.

    Returns:
        One row per group: the metric's mean, median and worst, and the means
        of the other figures; where the experiment has an `"unpenalized"`
        variant, `gap` is the difference of the means to it.
    """
    groups = {}
    for r in results:
        groups.setdefault((r["experiment"], r["variant"], _method_label(r)), []).append(r)
    rows = [_row(*key, runs) for key, runs in groups.items()]
    # The error gap to the same recipe without penalties (mean over seeds).
    reference = {r["experiment"]: r["mean"] for r in rows if r["variant"] == "unpenalized"}
    for row in rows:
        if row["experiment"] in reference and row["variant"] != "unpenalized":
            row["gap"] = row["mean"] - reference[row["experiment"]]
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The side-by-side table: our figures next to the paper's.

    Args:
        rows: Rows of `summarize`.

    Returns:
        The Markdown table, lines joined by newlines.
    """
    lines = [
        "| experiment | variant | method | seeds | metric (mean / median / worst) | paper "
        "| compression (paper) | units alive (paper) | slim params | slim MACs | speed-up "
        "| slim exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = r["paper"]
        metric = r["metric"]
        extra = f"; support {r['support_exact']}" if "support_exact" in r else ""
        if "gap" in r:
            extra += f"; {r['gap']:+.2f} vs unpenalized"
        figures = " / ".join(format_metric(metric, r[k]) for k in ("mean", "median", "worst"))
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {r['method']} | {r['seeds']} "
            f"| {metric} {figures}{extra} "
            f"| {format_metric(metric, paper[metric]) if metric in paper else '-'} "
            f"| {r['compression']:.1f}x ({paper.get('compression', '-')}x) "
            f"| {r['units']} ({paper.get('units', '-')}) "
            f"| {r['slim_params']:,.0f} / {r['params']:,} "
            f"| {r['slim_macs']:,.0f} / {r['macs']:,} "
            f"| {r['speedup']:.2f}x | {'yes' if r['slim_exact'] else 'NO'} |"
        )
    return "\n".join(lines)
